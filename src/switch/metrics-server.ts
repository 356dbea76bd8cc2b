// The Prometheus endpoint of one switch (`switch.metrics.listen`): GET /metrics, nothing else.
// A scrape builds the exposition from one stats snapshot (metrics.ts); the data path is not
// involved. A scrape that fails answers 500 and is logged; the switch goes on.

import { createServer, type Server } from 'node:http';
import { NviError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { SwitchMetrics } from './metrics.js';

export class MetricsServer {
  scrapes = 0;
  private constructor(private readonly server: Server) {}

  static async open(metrics: SwitchMetrics, at: { host: string; port: number }, log: Logger): Promise<MetricsServer> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
        return;
      }
      metrics.text().then(
        (body) => {
          self.scrapes++;
          res.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(body) }).end(req.method === 'HEAD' ? undefined : body);
        },
        (e: unknown) => {
          log.error('metrics-scrape-failed', { error: String(e) });
          res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n');
        },
      );
    });
    const self = new MetricsServer(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new NviError('NVI_ERR_METRICS', `switch.metrics.listen ${at.host}:${at.port}: ${e.code ?? e.message}`)));
      server.listen(at.port, at.host, () => resolve());
    });
    server.on('error', (e) => log.error('metrics-server-error', { error: String(e) }));
    log.info('metrics-listening', { address: at.host, port: at.port });
    return self;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
