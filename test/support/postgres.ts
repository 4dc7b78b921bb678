/**
 * The machine's PostgreSQL for tests (127.0.0.1:5432, trust auth; `.ci/run` starts it): each
 * caller gets a database of its own, created with a random name and dropped at the end, so tests
 * never share state. DRIFTLESS_TEST_PG overrides the server's URL (its database is the one
 * CREATE DATABASE runs in).
 */
import { randomBytes } from "node:crypto";
import pg from "pg";

export const PG_ADMIN_URL = process.env.DRIFTLESS_TEST_PG ?? "postgres://postgres@127.0.0.1:5432/postgres";

/**
 * null when the server answers, else why not (the tests then say so and are skipped); with
 * DRIFTLESS_REQUIRE_PG set (`.ci/run` sets it) an unreachable server is an error instead.
 */
export async function postgresUnreachable(): Promise<string | null> {
  const reason = await probe();
  if (reason !== null && process.env.DRIFTLESS_REQUIRE_PG) {
    throw new Error(`PostgreSQL at ${PG_ADMIN_URL} is required (DRIFTLESS_REQUIRE_PG) but unreachable: ${reason}`);
  }
  return reason;
}

async function probe(): Promise<string | null> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return null;
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export async function createDatabase(prefix = "driftless_test"): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  await admin((client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    // WITH (FORCE): connections a killed replica left behind do not keep it.
    drop: () => admin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  };
}
