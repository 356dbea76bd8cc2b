// nvi-switch console [-c nvi-switch.yaml] [--listen 127.0.0.1:9480] [--tls-cert F --tls-key F]
//   The tenant console: a web page and its API (src/console/server.ts) over the mapping store
//   and the switches' control sockets. Loopback by default; TLS when a certificate is given.
// nvi-switch tenant token T [-c nvi-switch.yaml]    a console token for tenant T (shown once)
// nvi-switch tenant token --operator                a token that sees every tenant and the hosts

import { readFileSync } from 'node:fs';
import { loadConfig, parseListen } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { consoleServer } from '../console/server.js';
import { TenantPolicies } from '../console/tenant-policy.js';
import { issueToken, TokenBook } from '../console/tokens.js';
import { openStore } from '../store/open-store.js';
import type { CableInfo } from '../switch/cable-info.js';
import { controlRequest } from '../switch/control.js';
import { controlPath } from '../switch/paths.js';
import { loadCa } from '../trust/pki.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

export const console_ = {
  async run(argv: string[]): Promise<number> {
    const { values } = parseOptions(argv, { ...CONFIG_OPTION, listen: { type: 'string' }, 'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' } });
    const cfg = loadConfig(values.config);
    const at = parseListen(values.listen ?? '127.0.0.1:9480', '--listen', '127.0.0.1:9480');
    if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new NviError('NVI_ERR_USAGE', '--tls-cert and --tls-key go together');
    const tokens = TokenBook.load(cfg);
    if (tokens.size === 0) process.stderr.write(`console: no tokens yet; issue one with nvi-switch tenant token T -c ${cfg.file}\n`);
    const store = await openStore(cfg);
    const app = consoleServer({
      tokens,
      policies: new TenantPolicies(store, loadCa(cfg.pkiDir).privateKey),
      binding: (id) => store.lookup(id),
      hosts: [...cfg.hosts.keys()],
      cables: (host) => controlRequest(controlPath(cfg, host), { cmd: 'cables' }, 2000).then((c) => c as CableInfo[], () => undefined),
    }, values['tls-cert'] ? { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']!) } : undefined);
    const url = await app.listen({ host: at.host, port: at.port });
    process.stdout.write(`console: ${url}\n`);
    return new Promise((resolve) => {
      const stop = (): void => {
        void app.close().then(() => store.close()).finally(() => resolve(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
};

export const tenant = {
  async run(argv: string[]): Promise<number> {
    const [sub, ...rest] = argv;
    if (sub !== 'token') throw new NviError('NVI_ERR_USAGE', 'usage: nvi-switch tenant token T | --operator [-c nvi-switch.yaml]');
    const { values, positionals } = parseOptions(rest, { ...CONFIG_OPTION, operator: { type: 'boolean' } });
    const cfg = loadConfig(values.config);
    if (values.operator === (positionals.length > 0) || positionals.length > 1) throw new NviError('NVI_ERR_USAGE', 'tenant token: one tenant name, or --operator');
    const token = issueToken(cfg, values.operator ? { kind: 'operator' } : { kind: 'tenant', tenant: positionals[0] });
    process.stdout.write(`${token}\n`);
    return 0;
  },
};
