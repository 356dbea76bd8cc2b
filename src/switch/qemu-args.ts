// How a user plugs their own VM into a switch port: the QEMU arguments and the libvirt
// <interface> for a VM's port as nvi-switch.yaml describes it (`nvi-switch vm qemu-args VM`).
// The guest needs nothing of ours: it gets its identity by DHCPv6 and its route by RA.

import { existsSync } from 'node:fs';
import { formatMac } from '../base/address.js';
import type { CloudConfig, VmConfig } from '../config/config.js';
import { streamPortPath } from './paths.js';

export interface QemuPort {
  /** -netdev and -device arguments, one array entry per argv word. */
  readonly args: string[];
  /** The same port as a libvirt domain XML snippet. */
  readonly libvirt: string;
  /** What the user should know (vhost, reconnects). */
  readonly notes: string[];
}

/** The port of `vm` on host `host` (default: where the config places it). */
export function qemuPort(cfg: CloudConfig, vm: VmConfig, host = vm.host): QemuPort {
  const mac = formatMac(vm.mac);
  const device = `virtio-net-pci,netdev=nvi0,mac=${mac}`;
  switch (vm.port.kind) {
    case 'qemu-tap': {
      const vhost = existsSync('/dev/vhost-net');
      return {
        args: ['-netdev', `tap,id=nvi0,ifname=${vm.tap},script=no,downscript=no,vhost=${vhost ? 'on' : 'off'}`, '-device', device],
        libvirt: [
          `<interface type='ethernet'>`,
          `  <mac address='${mac}'/>`,
          `  <target dev='${vm.tap}' managed='no'/>`,
          `  <model type='virtio'/>`,
          `</interface>`,
        ].join('\n'),
        notes: [
          `the switch on ${host} keeps ${vm.tap} (a persistent TAP) while the VM stops and starts`,
          vhost ? 'vhost-net is on (/dev/vhost-net exists here)' : 'vhost-net is off: /dev/vhost-net does not exist on this machine (modprobe vhost_net to use it)',
        ],
      };
    }
    case 'stream': {
      const path = vm.port.path ?? streamPortPath(cfg, host, vm.name);
      return {
        args: ['-netdev', `stream,id=nvi0,server=off,addr.type=unix,addr.path=${path}`, '-device', device],
        libvirt: [
          `<!-- libvirt has no stream netdev: pass it through (xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0') -->`,
          `<qemu:commandline>`,
          `  <qemu:arg value='-netdev'/>`,
          `  <qemu:arg value='stream,id=nvi0,server=off,addr.type=unix,addr.path=${path}'/>`,
          `  <qemu:arg value='-device'/>`,
          `  <qemu:arg value='${device}'/>`,
          `</qemu:commandline>`,
        ].join('\n'),
        notes: [
          `the switch on ${host} listens on ${path}; start it before the VM`,
          'QEMU 7.2 does not reconnect a stream netdev by itself: after a restart of the switch, restart the VM (QEMU >= 8.0: add reconnect=1)',
        ],
      };
    }
    case 'tap':
      return {
        args: [],
        libvirt: '',
        notes: [`${vm.name} has a TAP the switch owns (port kind tap, for the namespace lab): set port: { kind: qemu-tap } or { kind: stream } for a QEMU guest`],
      };
  }
}
