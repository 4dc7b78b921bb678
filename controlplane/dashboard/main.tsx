/** The dashboard's entry: served as /assets/app-HASH.js by `driftlessctl serve` after login. */
import { render } from "preact";
import { App } from "./app.js";

const root = document.getElementById("app");
if (root) render(<App />, root);
