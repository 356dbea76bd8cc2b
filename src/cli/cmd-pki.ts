// nvi-switch ca init | host enroll NAME | vm create NAME: the cloud's PKI and the first
// binding of each VM (NVI Algorithm steps 1-5). Certificates go to the config's pki dir;
// private keys to the key directory of the host that uses them (hosts.NAME.keys, by default
// keys/NAME/ under the pki dir); bindings and host certificates to the store.
//
//   nvi-switch ca init [-c nvi-switch.yaml] [--force]
//   nvi-switch host enroll NAME [-c nvi-switch.yaml]
//   nvi-switch vm create NAME --tenant T --host H [-c nvi-switch.yaml] [--validity SECONDS] [--attach]
//   nvi-switch vm attach|detach NAME [-c nvi-switch.yaml]        (cmd-vm.ts)

import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { isMap, isNode, parseDocument } from 'yaml';
import { loadConfig, PORT_KINDS } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { makeBinding } from '../trust/binding.js';
import { deriveIdentity } from '../trust/identity.js';
import {
  CA_VALIDITY_DAYS,
  LEAF_VALIDITY_DAYS,
  createCa,
  generateKey,
  issueHostCertificate,
  issueVmCertificate,
  loadCa,
  hostKeyPaths,
  pkiPaths,
  readPrivateKey,
  spkiDer,
  validityFrom,
  writeCertificate,
  writePrivateKey,
} from '../trust/pki.js';
import { formatIpv6 } from '../base/address.js';
import { openStore } from '../store/open-store.js';
import { CONFIG_OPTION, parseOptions } from './args.js';
import { attachOrDetach, vmPort, vmQemuArgs } from './cmd-vm.js';
import { publishPolicy } from '../switch/cloud.js';

/** Validity of the bindings `vm create` publishes; a running switch re-signs at VM start. */
const DEFAULT_BINDING_SECONDS = 30 * 86_400;

function usage(message: string): never {
  throw new NviError('NVI_ERR_USAGE', message);
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function show(path: string): string {
  return relative(process.cwd(), path) || path;
}

function subcommand(argv: string[], expected: string, synopsis: string): string[] {
  if (argv[0] !== expected) usage(`expected "${expected}": ${synopsis}`);
  return argv.slice(1);
}

export const ca = {
  async run(argv: string[]): Promise<number> {
    const synopsis = 'nvi-switch ca init [-c nvi-switch.yaml] [--force]';
    const { values, positionals } = parseOptions(subcommand(argv, 'init', synopsis), { ...CONFIG_OPTION, force: { type: 'boolean' } });
    if (positionals.length > 0) usage(`unexpected ${positionals.join(' ')}: ${synopsis}`);
    const cfg = loadConfig(values.config);
    const p = pkiPaths(cfg.pkiDir);
    if (!values.force && (existsSync(p.caCert) || existsSync(p.caKey))) {
      throw new NviError('NVI_ERR_PKI', `a CA already exists in ${show(cfg.pkiDir)} (ca.crt or ca.key); --force replaces it, and every host and VM certificate must then be issued again`);
    }
    const now = Date.now();
    const created = await createCa({ validity: validityFrom(now, CA_VALIDITY_DAYS) });
    writePrivateKey(p.caKey, created.privateKey);
    writeCertificate(p.caCert, created.certificate);
    say(`ca: ${created.parsed.subject}, valid until ${new Date(created.parsed.notAfter).toISOString()}`);
    say(`ca: wrote ${show(p.caCert)} and ${show(p.caKey)} (0600)`);
    return 0;
  },
};

export const host = {
  async run(argv: string[]): Promise<number> {
    const synopsis = 'nvi-switch host enroll NAME [-c nvi-switch.yaml]';
    const { values, positionals } = parseOptions(subcommand(argv, 'enroll', synopsis), CONFIG_OPTION);
    if (positionals.length !== 1) usage(`one host name expected: ${synopsis}`);
    const name = positionals[0];
    const cfg = loadConfig(values.config);
    const h = cfg.hosts.get(name);
    if (!h) throw new NviError('NVI_ERR_CONFIG', `hosts.${name}: no such host in ${cfg.file} (hosts: ${[...cfg.hosts.keys()].join(', ')})`);
    const authority = loadCa(cfg.pkiDir);
    const p = pkiPaths(cfg.pkiDir);
    const keyPath = hostKeyPaths(h.keyDir).hostKey;
    const reused = existsSync(keyPath);
    const privateKey = reused ? readPrivateKey(keyPath) : generateKey().privateKey;
    const now = Date.now();
    const certificate = await issueHostCertificate(authority, {
      host: name,
      address: h.addressText,
      publicKey: privateKey,
      validity: validityFrom(now, LEAF_VALIDITY_DAYS),
    });
    if (!reused) writePrivateKey(keyPath, privateKey);
    writeCertificate(p.hostCert(name), certificate);
    const store = await openStore(cfg);
    try {
      await store.publishHost({ host: name, address: h.addressText, certificate });
    } finally {
      await store.close();
    }
    say(`host ${name}: certificate CN=${name}, IP ${h.addressText}, ${reused ? 'existing' : 'new'} key ${show(keyPath)}`);
    say(`host ${name}: published to the ${cfg.store.kind} store ${show(cfg.store.path)}`);
    return 0;
  },
};

export const vm = {
  async run(argv: string[]): Promise<number> {
    if (argv[0] === 'attach' || argv[0] === 'detach') return vmPort(argv[0], argv.slice(1));
    if (argv[0] === 'qemu-args') return vmQemuArgs(argv.slice(1));
    const synopsis = 'nvi-switch vm create NAME --tenant T --host H [--port tap|qemu-tap|stream] [-c nvi-switch.yaml] [--validity SECONDS] [--attach] | vm attach|detach NAME | vm qemu-args NAME';
    const { values, positionals } = parseOptions(subcommand(argv, 'create', synopsis), {
      ...CONFIG_OPTION, tenant: { type: 'string' }, host: { type: 'string' }, validity: { type: 'string', default: String(DEFAULT_BINDING_SECONDS) },
      attach: { type: 'boolean' }, port: { type: 'string' },
    });
    if (values.port !== undefined && !(PORT_KINDS as readonly string[]).includes(values.port)) usage(`--port is one of ${PORT_KINDS.join(', ')}; got ${JSON.stringify(values.port)}`);
    if (positionals.length !== 1) usage(`one VM name expected: ${synopsis}`);
    const name = positionals[0];
    const tenantName = values.tenant ?? usage(`--tenant is required: ${synopsis}`);
    const hostName = values.host ?? usage(`--host is required: ${synopsis}`);
    const validityText = values.validity;
    const validity = Number(validityText);
    if (!Number.isInteger(validity) || validity < 1) usage(`--validity is whole seconds, got ${JSON.stringify(validityText)}`);
    if (!/^[a-z][a-z0-9-]{0,14}$/.test(name)) usage(`VM names are 1-15 of a-z, 0-9, '-', starting with a letter; got ${JSON.stringify(name)}`);

    const cfg = loadConfig(values.config);
    const tenant = cfg.tenants.get(tenantName);
    if (!tenant) throw new NviError('NVI_ERR_CONFIG', `tenants.${tenantName}: no such tenant in ${cfg.file} (tenants: ${[...cfg.tenants.keys()].join(', ')})`);
    const h = cfg.hosts.get(hostName);
    if (!h) throw new NviError('NVI_ERR_CONFIG', `hosts.${hostName}: no such host in ${cfg.file} (hosts: ${[...cfg.hosts.keys()].join(', ')})`);
    const existing = cfg.vms.get(name);
    if (existing && existing.tenant !== tenantName) {
      throw new NviError('NVI_ERR_CONFIG', `tenants.${existing.tenant}.vms.${name}: VM ${name} belongs to tenant ${existing.tenant}, not ${tenantName}`);
    }
    if (existing && values.port !== undefined && existing.port.kind !== values.port) {
      throw new NviError('NVI_ERR_CONFIG', `tenants.${tenantName}.vms.${name}.port: ${name} has a ${existing.port.kind} port in ${cfg.file}; change it there, not with --port`);
    }
    if (existing && existing.host !== hostName) {
      throw new NviError('NVI_ERR_CONFIG', `tenants.${tenantName}.vms.${name}.host: ${name} runs on ${existing.host} in ${cfg.file}, not ${hostName} (a move is a migration: epoch + 1 from the new host)`);
    }

    // NVI Algorithm step 1: the identity, from the tenant prefix and the VM's key, which lives
    // in its host's key directory only.
    const p = pkiPaths(cfg.pkiDir);
    const keyPath = hostKeyPaths(h.keyDir).vmKey(name);
    const reused = existsSync(keyPath);
    const privateKey = reused ? readPrivateKey(keyPath) : generateKey().privateKey;
    const identity = formatIpv6(deriveIdentity(tenant.prefix, spkiDer(privateKey)));
    if (existing && existing.identityText !== identity) {
      throw new NviError(
        'NVI_ERR_CONFIG',
        `tenants.${tenantName}.vms.${name}.identity: ${cfg.file} says ${existing.identityText}, but the key ${show(keyPath)} derives ${identity}`,
      );
    }

    // Step 4: Cert(V6).
    const authority = loadCa(cfg.pkiDir);
    const now = Date.now();
    const certificate = await issueVmCertificate(authority, {
      vm: name,
      tenant: tenantName,
      identity,
      publicKey: privateKey,
      validity: validityFrom(now, LEAF_VALIDITY_DAYS),
    });
    if (!reused) writePrivateKey(keyPath, privateKey);
    writeCertificate(p.vmCert(name), certificate);

    // Steps 2, 3 and 5: the signed binding in the store, one epoch past any earlier one (withdrawn or not).
    const store = await openStore(cfg);
    let epoch: number;
    try {
      epoch = (await store.lastEpoch(identity)) + 1;
      const record = makeBinding(
        { certificate, privateKey },
        { name, tenant: tenantName, identityText: identity },
        { name: hostName, addressText: h.addressText },
        epoch,
        now,
        validity,
      );
      await store.publish(record);
    } catch (e) {
      // Nothing half-made stays behind: a new key without its VM in the config would stop its host's switch from starting.
      if (!reused) rmSync(keyPath, { force: true });
      if (!existing) rmSync(p.vmCert(name), { force: true });
      throw e;
    } finally {
      await store.close();
    }

    if (!existing) addVmToConfig(cfg.file, tenantName, name, hostName, identity, values.port);
    say(`vm ${name}: identity ${identity} (tenant ${tenantName} ${tenant.prefix.text}), ${reused ? 'existing' : 'new'} key ${show(keyPath)}`);
    say(`vm ${name}: certificate ${show(p.vmCert(name))}; binding epoch ${epoch} on ${hostName} ${h.addressText} published to ${show(cfg.store.path)}`);
    if (!existing) {
      say(`vm ${name}: added to ${show(cfg.file)} under tenants.${tenantName}.vms`);
      // The policy document lists every tenant's VMs: publish it again, signed, with this one.
      const fresh = loadConfig(cfg.file);
      const s = await openStore(fresh);
      try {
        say(`policy: revision ${await publishPolicy(fresh, s)} in the store`);
      } finally {
        await s.close();
      }
    }
    if (values.attach) {
      const r = (await attachOrDetach(loadConfig(cfg.file), 'attach', name)) as { epoch: number };
      say(`vm ${name}: attached on the running switch of ${hostName}, binding epoch ${r.epoch}`);
    }
    return 0;
  },
};

/**
 * Add `tenants.T.vms.NAME: { host: H, identity: X }` to the YAML file. When the tenant has a
 * block mapping of VMs, one line is inserted after its last entry, at its indentation, and
 * every other byte of the file stays as it was; otherwise the yaml Document API sets the
 * entry and prints the document again (comments kept, alignment not).
 */
export function addVmToConfig(file: string, tenant: string, name: string, hostName: string, identity: string, port?: string): void {
  const text = readFileSync(file, 'utf8');
  const doc = parseDocument(text);
  const path = ['tenants', tenant, 'vms'];
  const vms = doc.getIn(path, true);
  const line = `${name}: { host: ${hostName}, identity: ${identity}${port ? `, port: { kind: ${port} }` : ''} }`;
  let out: string | undefined;
  if (isMap(vms) && !vms.flow && vms.items.length > 0) {
    const last = vms.items[vms.items.length - 1];
    const keyStart = isNode(last.key) ? last.key.range?.[0] : undefined;
    const valueEnd = isNode(last.value) ? last.value.range?.[1] : isNode(last.key) ? last.key.range?.[1] : undefined;
    if (keyStart !== undefined && valueEnd !== undefined) {
      const indent = keyStart - (text.lastIndexOf('\n', keyStart - 1) + 1);
      // A block value's range runs to the start of the next line: insert after its last character.
      const eol = text.indexOf('\n', text.slice(0, valueEnd).trimEnd().length);
      const at = eol < 0 ? text.length : eol;
      out = `${text.slice(0, at)}\n${' '.repeat(indent)}${line}${eol < 0 ? '\n' : ''}${text.slice(at)}`;
    }
  }
  if (out === undefined) {
    if (vms !== undefined && vms !== null && !isMap(vms)) throw new NviError('NVI_ERR_CONFIG', `${path.join('.')}: expected a mapping in ${file}`);
    const entry = doc.createNode(port ? { host: hostName, identity, port: { kind: port } } : { host: hostName, identity });
    entry.flow = true;
    if (isMap(vms)) vms.set(name, entry);
    else doc.setIn(path, doc.createNode({ [name]: entry }));
    out = doc.toString({ lineWidth: 0 });
  }
  // The edit must read back as exactly the one new VM.
  const check = parseDocument(out).getIn([...path, name], false) as { toJSON?: () => unknown } | undefined;
  const got = check?.toJSON?.() as { host?: string; identity?: string } | undefined;
  if (got?.host !== hostName || got?.identity !== identity) {
    throw new NviError('NVI_ERR_CONFIG', `${path.join('.')}.${name}: could not add the VM to ${file} safely; add this line by hand: ${line}`);
  }
  writeFileSync(file, out);
}
