// nvi-switch run -c nvi-switch.yaml --host NAME [--control PATH] [--vm-netns PREFIX] [--cipher native|node]
//                [--export-sa FILE]   (debug: SA keys in Wireshark's esp_sa format)
// Runs one host's switch until SIGINT or SIGTERM, then removes what it created (TAPs,
// control socket) and exits 0; or until it hands over to a new process (`nvi-switch restart`),
// then exits 0 removing nothing. --takeover: started by `restart` to take over (handover.ts).

import { loadConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { chooseCipher } from '../esp/choose-cipher.js';
import { JsonLogger } from '../base/log.js';
import { LiveSwitch } from '../switch/live.js';
import { ShardedSwitch } from '../switch/workers/sharded-switch.js';
import { Predecessor, TAKEOVER_FLAG } from '../switch/handover.js';
import { controlPath } from '../switch/paths.js';
import { markPacketThread, yieldHelperThreads } from '../switch/thread-policy.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    ...CONFIG_OPTION, host: { type: 'string' }, control: { type: 'string' }, 'vm-netns': { type: 'string' }, cipher: { type: 'string' }, 'export-sa': { type: 'string' },
    takeover: { type: 'boolean' },
  });
  const takeover = values.takeover ? Predecessor.fromEnv() : undefined;
  if (values.takeover && !takeover) throw new NviError('NVI_ERR_USAGE', `${TAKEOVER_FLAG}: only \`nvi-switch restart\` starts a switch that takes over`);
  const config = loadConfig(values.config);
  const host = values.host;
  if (!host) throw new NviError('NVI_ERR_USAGE', `--host is required (one of ${[...config.hosts.keys()].join(', ')})`);
  if (!config.hosts.has(host)) throw new NviError('NVI_ERR_USAGE', `--host ${host}: no such host in ${config.file} (hosts: ${[...config.hosts.keys()].join(', ')})`);
  const log = new JsonLogger(undefined, undefined, undefined, { host });
  const control = values.control ?? controlPath(config, host);
  const cipher = chooseCipher(values.cipher); // a bad name is a usage error here, not in every worker
  const workers = config.switch.workers;
  const handedThreads = takeover?.manifest.threads.length ?? workers;
  if (handedThreads !== workers) {
    // Thread k takes over thread k's VMs and SPIs (SPI mod N names the thread): N cannot change in a handover.
    const why = `switch.workers is ${workers} in ${config.file}, but the running switch has ${handedThreads} data-path thread${handedThreads === 1 ? '' : 's'}: a handover keeps their number; to change it, stop the switch and start it again`;
    takeover!.failed(why);
    throw new NviError('NVI_ERR_HANDOVER', why);
  }
  const udpPort = config.underlay.espUdpPort;
  const handedSockets = takeover?.manifest.threads[0]?.underlay.length;
  if (handedSockets !== undefined && handedSockets !== (udpPort !== 0 ? 3 : 2)) {
    // The running switch's sockets carry ESP one way; its peers expect it that way until they restart too.
    const running = handedSockets === 3 ? 'ESP in UDP' : 'ESP as IP protocol 50';
    const why = `underlay.espUdpPort is ${udpPort} in ${config.file}, but the running switch carries ${running}: a handover keeps the underlay's sockets; to change it, stop every switch of the cloud and start them again`;
    takeover!.failed(why);
    throw new NviError('NVI_ERR_HANDOVER', why);
  }
  markPacketThread(); // the miss path's thread
  const sw = workers > 1
    ? await ShardedSwitch.start(config, host, { log, control, cipher: values.cipher, vmNetnsPrefix: values['vm-netns'], exportSa: values['export-sa'], takeover })
    : await LiveSwitch.start(config, host, {
      cipher,
      log,
      control,
      vmNetnsPrefix: values['vm-netns'],
      exportSa: values['export-sa'],
      takeover: takeover?.single(),
    });
  try {
    log.info('helper-threads', { schedBatch: await yieldHelperThreads() });
  } catch (e) {
    log.warn('helper-threads-unchanged', { error: (e as Error).message }); // they keep preempting the packet threads; nothing else changes
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info('signal', { signal });
      sw.stop().then(() => resolve(0), (e) => {
        log.error('stop-failed', { error: (e as Error).message });
        resolve(1);
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    void sw.finished.then((code) => {
      stopping = true;
      setTimeout(() => process.exit(code), 2000).unref(); // should anything still hold the loop
      resolve(code);
    });
  });
}
