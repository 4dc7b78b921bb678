/** The HTTP part as `serve` starts it: a running serve's context adapted to the server's deps. */
import { createFleetMetrics } from "../metrics.js";
import type { HttpStarter } from "../serve.js";
import { createHttpServer } from "./server.js";

export const startHttp: HttpStarter = async (context, address) => {
  const server = createHttpServer({
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
  const { url } = await server.listen(address.host, address.port);
  return { url, loginUrl: `${url}/?token=${server.issueLoginToken()}`, close: () => server.close() };
};
