// The tenant console's HTTP API and page (`nvi-switch console`), on fastify: its JSON-schema
// validation refuses a malformed body with the field it fails on, and its body limit and
// content-type parsing refuse oversized and non-JSON bodies before any handler runs.
//
// Every /api route needs a bearer token (tokens.ts). Routes under /api/tenants/:tenant are
// answered only for the token's own tenant (the operator's token: any tenant); the tenant a
// token speaks for is never taken from the request. What a tenant sees of a cable whose other
// end belongs to another tenant: that end's identity only, and "(another tenant's rule)".
// The route table below is also the OpenAPI document (GET /openapi.json).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { stringify } from 'yaml';
import { ConfigError, NviError } from '../base/errors.js';
import type { CableInfo } from '../switch/cable-info.js';
import type { BindingRecord } from '../trust/records.js';
import type { Principal, TokenBook } from './tokens.js';
import type { TenantPolicies, TenantPolicy } from './tenant-policy.js';

export interface ConsoleParts {
  readonly tokens: TokenBook;
  readonly policies: TenantPolicies;
  /** The binding of an identity in the mapping store. */
  binding(identity: string): Promise<BindingRecord | undefined>;
  /** The hosts whose switches the console asks, and their cables (a host not answering: undefined). */
  readonly hosts: readonly string[];
  cables(host: string): Promise<CableInfo[] | undefined>;
}

/** Largest body accepted: a tenant's policy fits many times over. */
export const BODY_LIMIT = 256 * 1024;

const WEB = join(fileURLToPath(new URL('../../../', import.meta.url)), 'web');

type Handler = (req: FastifyRequest, who: Principal) => Promise<unknown>;
interface Route {
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly url: string;
  readonly summary: string;
  readonly body?: Record<string, unknown>;
  readonly operatorOnly?: boolean;
  readonly yaml?: boolean;
  readonly handler: Handler;
}

const DRAFT = {
  type: 'object',
  additionalProperties: false,
  properties: {
    groups: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 1000 } },
    rules: { type: 'array', maxItems: 1000, items: { type: 'object' } },
    tests: { type: 'array', maxItems: 1000, items: { type: 'object' } },
    levels: { type: 'object', maxProperties: 1000 }, // values checked with the policy, so that an error names the VM's field
    revision: { type: 'integer', minimum: 0 },
  },
};
const WHAT_IF = {
  type: 'object',
  required: ['src', 'dst'],
  additionalProperties: false,
  properties: {
    ...DRAFT.properties,
    src: { type: 'string', maxLength: 64 },
    dst: { type: 'string', maxLength: 64 },
    proto: { type: 'string', maxLength: 8 },
    port: { type: 'integer', minimum: 0, maximum: 65535 },
  },
};

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly check?: unknown) {
    super(message);
  }
}

function draftOf(body: unknown): TenantPolicy {
  const b = (body ?? {}) as Record<string, unknown>;
  return { groups: b.groups ?? null, rules: b.rules ?? null, tests: b.tests ?? null, levels: b.levels as TenantPolicy['levels'] };
}

function param(req: FastifyRequest, name: string): string {
  return (req.params as Record<string, string>)[name];
}

/** The routes; the tenant in the path has been checked against the token before a handler runs. */
function routes(p: ConsoleParts): Route[] {
  const vmsOf = async (tenant: string) => {
    const { tenant: t } = await p.policies.tenant(tenant);
    return Promise.all(t.vms.map(async (v) => {
      const b = await p.binding(v.identityText);
      return { name: v.name, identity: v.identityText, level: v.level ?? null, host: b?.host ?? null, epoch: b?.epoch ?? null, state: b ? 'bound' : 'no binding' };
    }));
  };
  return [
    { method: 'GET', url: '/api/whoami', summary: 'Whom the token speaks for', handler: async (_r, who) => who },
    {
      method: 'GET', url: '/api/tenants', summary: 'The tenants the token may see',
      handler: async (_r, who) => (who.kind === 'operator' ? (await p.policies.published()).tenants.map((t) => t.name) : [who.tenant]),
    },
    { method: 'GET', url: '/api/hosts', summary: 'The hosts and whether their switches answer (operator only)', operatorOnly: true,
      handler: async () => Promise.all(p.hosts.map(async (h) => ({ host: h, running: (await p.cables(h)) !== undefined }))) },
    { method: 'GET', url: '/api/tenants/:tenant/vms', summary: "The tenant's VMs: identity, level, host and binding epoch", handler: async (r) => vmsOf(param(r, 'tenant')) },
    {
      method: 'GET', url: '/api/tenants/:tenant/vms/:vm', summary: 'One VM of the tenant',
      handler: async (r) => {
        const vm = (await vmsOf(param(r, 'tenant'))).find((v) => v.name === param(r, 'vm'));
        if (!vm) throw new HttpError(404, `no VM ${param(r, 'vm')} in tenant ${param(r, 'tenant')}`);
        return vm;
      },
    },
    {
      method: 'GET', url: '/api/tenants/:tenant/policy', summary: "The tenant's groups, rules and tests as published, with the revision",
      handler: async (r) => {
        const { revision, tenant } = await p.policies.tenant(param(r, 'tenant'));
        const levels = Object.fromEntries(tenant.vms.map((v) => [v.name, v.level ?? null]));
        return { revision, groups: tenant.policy.groups ?? {}, rules: tenant.policy.rules ?? [], tests: tenant.policy.tests ?? [], levels };
      },
    },
    {
      method: 'GET', url: '/api/tenants/:tenant/policy.yaml', summary: "The tenant's section of nvi-switch.yaml as published", yaml: true,
      handler: async (r) => {
        const { revision, tenant } = await p.policies.tenant(param(r, 'tenant'));
        const section = { [tenant.name]: { groups: tenant.policy.groups ?? {}, rules: tenant.policy.rules ?? [], tests: tenant.policy.tests ?? [] } };
        return `# tenant ${tenant.name}, policy revision ${revision}\n${stringify({ tenants: section })}`;
      },
    },
    { method: 'POST', url: '/api/tenants/:tenant/policy/check', summary: 'Compile a draft with every other tenant\'s published policy and run the tests', body: DRAFT,
      handler: async (r) => p.policies.check(param(r, 'tenant'), draftOf(r.body)) },
    {
      method: 'POST', url: '/api/tenants/:tenant/policy/what-if', summary: 'The decision for two of the tenant\'s VMs under a draft, step by step', body: WHAT_IF,
      handler: async (r) => {
        const b = r.body as { src: string; dst: string; proto?: string; port?: number };
        return p.policies.whatIf(param(r, 'tenant'), draftOf(r.body), b.src, b.dst, { proto: b.proto, port: b.port });
      },
    },
    {
      method: 'PUT', url: '/api/tenants/:tenant/policy', summary: 'Publish a draft as the next revision, signed by the CA, if its tests pass and `revision` is still the current one', body: { ...DRAFT, required: ['revision'] },
      handler: async (r) => {
        const out = await p.policies.publish(param(r, 'tenant'), draftOf(r.body), (r.body as { revision: number }).revision);
        if ('conflict' in out) throw new HttpError(409, `the policy changed meanwhile: revision ${out.conflict} is current; reload and edit again`);
        if ('check' in out) throw new HttpError(422, out.check.errors.length > 0 ? out.check.errors[0].message : 'not published: the policy tests fail', out.check);
        return out;
      },
    },
    {
      method: 'GET', url: '/api/tenants/:tenant/cables', summary: "The cables of the tenant's VMs on every host: pair, rule, packets, bytes, drops",
      handler: async (r) => {
        const tenant = param(r, 'tenant');
        const { tenant: t } = await p.policies.tenant(tenant);
        const mine = new Set(t.vms.map((v) => v.identityText));
        const out = [];
        for (const host of p.hosts) {
          for (const c of (await p.cables(host)) ?? []) {
            if (!mine.has(c.src) && !mine.has(c.dst)) continue;
            out.push({
              host, direction: c.direction, state: c.state, packets: c.packets, bytes: c.bytes, drops: c.drops, ageSeconds: c.ageSeconds,
              src: c.src, dst: c.dst, srcVm: mine.has(c.src) ? c.srcVm ?? null : null, dstVm: mine.has(c.dst) ? c.dstVm ?? null : null,
              rule: c.rule.startsWith(`${tenant}/`) || !c.rule.includes('/') ? c.rule : "(another tenant's rule)",
            });
          }
        }
        return out;
      },
    },
  ];
}

/** The OpenAPI 3 document of the routes. */
function openApi(list: readonly Route[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of list) {
    const path = r.url.replace(/:(\w+)/g, '{$1}');
    const params = [...r.url.matchAll(/:(\w+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    (paths[path] ??= {})[r.method.toLowerCase()] = {
      summary: r.summary,
      security: [{ bearer: [] }],
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: r.body } } } } : {}),
      responses: {
        200: { description: 'OK', content: { [r.yaml ? 'application/yaml' : 'application/json']: {} } },
        400: { description: 'Malformed request' }, 401: { description: 'No valid token' }, 403: { description: 'Not this token\'s tenant' },
        404: { description: 'No such object' }, ...(r.method === 'PUT' ? { 409: { description: 'The policy changed meanwhile' }, 422: { description: 'The draft does not compile or its tests fail' } } : {}),
      },
    };
  }
  return {
    openapi: '3.0.3',
    info: { title: 'nvi-switch tenant console', version: '1' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'nvi-switch tenant token T (or --operator)' } } },
    paths,
  };
}

function principalOf(req: FastifyRequest, tokens: TokenBook): Principal | undefined {
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
  return m ? tokens.who(m[1]) : undefined;
}

function allowed(who: Principal, route: Route, req: FastifyRequest): string | undefined {
  if (route.operatorOnly && who.kind !== 'operator') return 'only the operator may see this';
  const tenant = (req.params as Record<string, string> | undefined)?.tenant;
  if (tenant !== undefined && who.kind === 'tenant' && tenant !== who.tenant) return `the token of tenant ${who.tenant} cannot see tenant ${tenant}`;
  return undefined;
}

/** The console's server (not listening yet: listen() it, or inject() requests in tests). */
export function consoleServer(parts: ConsoleParts, tls?: { cert: Buffer; key: Buffer }): FastifyInstance {
  // Unknown fields are refused, not stripped (fastify's default would drop them silently).
  const opts = { bodyLimit: BODY_LIMIT, logger: false, ajv: { customOptions: { removeAdditional: false, coerceTypes: false } } } as const;
  const app = (tls ? Fastify({ ...opts, https: tls }) : Fastify(opts)) as unknown as FastifyInstance;
  app.removeContentTypeParser('text/plain'); // JSON only: anything else is 415
  const list = routes(parts);
  for (const route of list) {
    app.route({
      method: route.method,
      url: route.url,
      schema: route.body ? { body: route.body } : undefined,
      // Before the body is read: no token, no parsing.
      onRequest: async (req: FastifyRequest, reply: FastifyReply) => {
        const who = principalOf(req, parts.tokens);
        if (!who) return reply.code(401).send({ error: 'a valid token is required: Authorization: Bearer <token> (nvi-switch tenant token T issues one)' });
        const refusal = allowed(who, route, req);
        if (refusal) return reply.code(403).send({ error: refusal });
        (req as FastifyRequest & { who?: Principal }).who = who;
      },
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const out = await route.handler(req, (req as FastifyRequest & { who: Principal }).who);
        if (route.yaml) return reply.type('application/yaml').header('content-disposition', 'attachment; filename="policy.yaml"').send(out);
        return out;
      },
    });
  }
  app.get('/openapi.json', async () => openApi(list));
  app.get('/', async (_req, reply) => reply.type('text/html').send(readFileSync(join(WEB, 'console.html'))));
  app.get('/console.js', async (_req, reply) => reply.type('text/javascript').send(readFileSync(join(WEB, 'console.js'))));
  app.setErrorHandler(async (err: Error & { statusCode?: number; code?: string; validation?: unknown; check?: unknown }, _req, reply) => {
    if (err instanceof HttpError) return reply.code(err.status).send({ error: err.message, ...(err.check ? { check: err.check } : {}) });
    if (err instanceof NviError && err.code === 'NVI_ERR_NOT_FOUND') return reply.code(404).send({ error: err.message });
    if (err instanceof ConfigError) return reply.code(422).send({ error: err.message, path: err.path });
    if (err.validation) return reply.code(400).send({ error: `malformed request: ${err.message}` });
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return reply.code(err.statusCode).send({ error: err.message });
    return reply.code(500).send({ error: err.message });
  });
  return app;
}
