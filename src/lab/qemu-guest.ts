// A QEMU guest for the lab, the tests and the benches: the small image of
// scripts/guest-image.sh (the distribution's kernel, busybox, dhcpcd, iperf3), its console on
// the process's stdio (a shell driven line by line), QMP on a unix socket (migration), and its
// network port exactly as `nvi-switch vm qemu-args` prints it. KVM when /dev/kvm boots a guest
// here, TCG otherwise (checked once per boot of the machine).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NviError } from '../base/errors.js';
import { qmpCommand } from '../io/qmp.js';

export interface GuestImage {
  readonly kernel: string;
  readonly initrd: string;
}

export interface GuestOptions {
  readonly name: string;
  readonly image: GuestImage;
  /** The port's -netdev/-device arguments (qemuPort().args). */
  readonly net: readonly string[];
  /** Directory for the QMP socket and the console log. */
  readonly dir: string;
  /** Run QEMU in this network namespace (where the switch's TAP is). */
  readonly netns?: string;
  /** Wait for an incoming migration on this unix socket. */
  readonly incoming?: string;
  readonly memoryMb?: number;
  readonly accel?: 'kvm' | 'tcg';
}

const BOOTED = /nvi-guest: booted ([\d.]+) s/;

/** Build the guest image (scripts/guest-image.sh) into `dir` if it is not there yet. */
export function guestImage(repo: string, dir = join(repo, 'build', 'guest')): GuestImage {
  const r = spawnSync('bash', [join(repo, 'scripts', 'guest-image.sh'), dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new NviError('NVI_ERR_GUEST', `guest image: ${r.stderr || r.stdout}`);
  return { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img') };
}

/**
 * 'kvm' when a KVM guest boots here within 20 s, else 'tcg' (a nested or broken KVM can open
 * /dev/kvm and then hang in the guest's first instructions). Kept for this boot of the machine.
 */
export async function accelerator(image: GuestImage, cacheDir: string): Promise<'kvm' | 'tcg'> {
  if (!existsSync('/dev/kvm')) return 'tcg';
  const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const cache = join(cacheDir, `kvm-${bootId}`);
  if (existsSync(cache)) return readFileSync(cache, 'utf8').trim() === 'kvm' ? 'kvm' : 'tcg';
  const q = spawn('qemu-system-x86_64', ['-accel', 'kvm', ...machineArgs(image, 256), '-nic', 'none'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const ok = await new Promise<boolean>((resolve) => {
    let out = '';
    const t = setTimeout(() => resolve(false), 20_000);
    q.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (BOOTED.test(out)) {
        clearTimeout(t);
        resolve(true);
      }
    });
    q.on('exit', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
  q.kill('SIGKILL');
  mkdirSync(cacheDir, { recursive: true });
  writeFileSync(cache, ok ? 'kvm' : 'tcg');
  return ok ? 'kvm' : 'tcg';
}

function machineArgs(image: GuestImage, memoryMb: number): string[] {
  return [
    '-m', String(memoryMb), '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio', '-monitor', 'none',
    '-kernel', image.kernel, '-initrd', image.initrd, '-append', 'console=ttyS0 quiet panic=-1',
  ];
}

export class QemuGuest {
  /** Everything the console printed. */
  console = '';
  /** Seconds the guest kernel took to reach /init's first line (its own clock). */
  bootSeconds = NaN;
  private waiters: (() => void)[] = [];
  private serial = 0;
  private exited: number | null = null;

  private constructor(readonly name: string, readonly proc: ChildProcess, readonly qmpPath: string, readonly startedAt: number) {
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.console += d;
      for (const w of this.waiters.splice(0)) w();
    });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.console += d;
    });
    proc.on('exit', (code) => {
      this.exited = code ?? -1;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static start(o: GuestOptions): QemuGuest {
    mkdirSync(o.dir, { recursive: true });
    const qmp = join(o.dir, `${o.name}.qmp`);
    const args = [
      '-name', o.name, '-accel', o.accel ?? 'tcg', ...machineArgs(o.image, o.memoryMb ?? 256),
      '-qmp', `unix:${qmp},server=on,wait=off`, ...o.net, ...(o.incoming ? ['-incoming', `unix:${o.incoming}`] : []),
    ];
    const cmd = o.netns ? ['ip', ['netns', 'exec', o.netns, 'qemu-system-x86_64', ...args]] as const : ['qemu-system-x86_64', args] as const;
    const proc = spawn(cmd[0], [...cmd[1]], { stdio: ['pipe', 'pipe', 'pipe'] });
    return new QemuGuest(o.name, proc, qmp, Date.now());
  }

  get running(): boolean {
    return this.exited === null;
  }

  /** Wait until the console matches `re` (from `from` on); returns the match. */
  async waitFor(re: RegExp, ms: number, from = 0): Promise<RegExpExecArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.console.slice(from));
      if (m) return m;
      if (this.exited !== null) throw new NviError('NVI_ERR_GUEST', `${this.name}: QEMU exited (${this.exited}) before ${re}; console:\n${this.tail()}`);
      const left = end - Date.now();
      if (left <= 0) throw new NviError('NVI_ERR_GUEST', `${this.name}: no ${re} within ${ms} ms; console:\n${this.tail()}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Booted: /init ran and the shell reads the console. Returns ms from start. */
  async booted(ms = 120_000): Promise<number> {
    const m = await this.waitFor(BOOTED, ms);
    this.bootSeconds = Number(m[1]);
    await this.run('true', ms);
    return Date.now() - this.startedAt;
  }

  /** Run a shell command on the console; its output (without the echoed command) and exit code. */
  async run(command: string, ms = 60_000): Promise<{ out: string; code: number }> {
    if (/&\s*$/.test(command)) throw new NviError('NVI_ERR_GUEST', `${this.name}: run \`( ${command} )\` to leave a job in the background`);
    const tag = `NVI${++this.serial}X`;
    const from = this.console.length;
    this.proc.stdin!.write(`${command}; echo "__${tag}_$?__"\n`);
    const m = await this.waitFor(new RegExp(`__${tag}_(\\d+)__\\r?\\n`), ms, from);
    const text = this.console.slice(from);
    return { out: text.slice(0, text.indexOf(m[0])).trim(), code: Number(m[1]) }; // the console does not echo
  }

  /** Run a command that must succeed; its output. */
  async sh(command: string, ms = 60_000): Promise<string> {
    const r = await this.run(command, ms);
    if (r.code !== 0) throw new NviError('NVI_ERR_GUEST', `${this.name}: \`${command}\` exited ${r.code}: ${r.out}`);
    return r.out;
  }

  /** The global address DHCPv6 gave eth0, once it is there. */
  async address(ms = 60_000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const out = (await this.run('ip -6 -o addr show dev eth0 scope global', ms)).out;
      const m = /inet6 ([0-9a-f:]+)\/128/.exec(out);
      if (m && !/tentative/.test(out)) return m[1];
      if (Date.now() > end) throw new NviError('NVI_ERR_GUEST', `${this.name}: no DHCPv6 address within ${ms} ms (ip says: ${out || 'nothing'})`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** A QMP command on this guest's monitor; its `return`. */
  qmp(execute: string, args?: Record<string, unknown>, ms = 10_000): Promise<unknown> {
    return qmpCommand(this.qmpPath, execute, args, ms);
  }

  /** Stop QEMU (SIGTERM, then SIGKILL) and wait for it. */
  async stop(): Promise<void> {
    if (this.exited !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await new Promise<void>((r) => (this.exited !== null ? r() : this.proc.once('exit', () => r())));
    clearTimeout(t);
  }

  private tail(): string {
    return this.console.slice(-2000);
  }
}
