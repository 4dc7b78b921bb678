/** The HTTP part as `serve` starts it: a running serve's context adapted to the server's deps. */
import { createFleetMetrics } from "../metrics.js";
import type { HttpStarter, ServeContext } from "../serve.js";
import { findDashboardDir, loadDashboard } from "./dashboard.js";
import { createHttpServer, type HttpServer } from "./server.js";

/** The HTTP server serve runs, not listening yet (tests keep it to stop and restart it). */
export function createServeHttp(context: ServeContext): HttpServer {
  const dashboardDir = findDashboardDir(import.meta.url);
  if (dashboardDir === null) context.log.warn("dashboard not built (npm run build): serving the minimal page at /");
  return createHttpServer({
    events: context.events,
    dashboard: dashboardDir === null ? null : loadDashboard(dashboardDir),
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
