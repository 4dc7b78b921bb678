// `node --import ./register.mjs PROGRAM`: appends the URL of every module PROGRAM loads, one a
// line, to the file named by $DRIFTLESS_TEST_LOAD_LOG (tests check which chunks a run evaluated).
import { register } from "node:module";

register("./hooks.mjs", import.meta.url, { data: { file: process.env.DRIFTLESS_TEST_LOAD_LOG } });
