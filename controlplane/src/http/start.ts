/** The HTTP part as `serve` starts it: a running serve's context adapted to the server's deps. */

import { isSingleBinary } from "../../../agent/src/host/native.js";
import type { Logger } from "../../../agent/src/log.js";
import { createFleetMetrics } from "../metrics.js";
import type { HttpStarter, ServeContext } from "../serve.js";
import { type DashboardFiles, findDashboardDir, loadDashboard, loadEmbeddedDashboard, seaAsset } from "./dashboard.js";
import { createHttpServer, type HttpServer } from "./server.js";

/** The HTTP server serve runs, not listening yet (tests keep it to stop and restart it). */
export function createServeHttp(context: ServeContext): HttpServer {
  return createHttpServer({
    events: context.events,
    dashboard: dashboard(context.log),
    store: context.store,
    publish: (topic, payload, options) => context.broker.publish(topic, payload, options),
    metrics: createFleetMetrics(),
    counters: {
      ingest: context.ingestStats,
      ...(context.brokerRefused ? { brokerRefused: context.brokerRefused } : {}),
    },
    apiToken: context.apiToken,
    webhookSecret: context.webhookSecret,
    logger: context.log,
    now: context.now,
  });
}

export const startHttp: HttpStarter = async (context, address) => {
  const server = createServeHttp(context);
  const { url } = await server.listen(address.host, address.port);
  return { url, loginUrl: `${url}/?token=${server.issueLoginToken()}`, close: () => server.close() };
};

/**
 * The dashboard's files: in the driftlessctl binary, its own assets (never a dist/ that happens to
 * be beside it); else the build's dist/dashboard/.
 */
function dashboard(log: Logger): DashboardFiles | null {
  if (isSingleBinary()) {
    const files = loadEmbeddedDashboard(seaAsset);
    if (files === null) log.warn("this driftlessctl binary carries no dashboard: serving the minimal page at /");
    return files;
  }
  const dir = findDashboardDir(import.meta.url);
  if (dir === null) log.warn("dashboard not built (npm run build): serving the minimal page at /");
  return dir === null ? null : loadDashboard(dir);
}
