#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: set up, replay the shipped
# captures through the pipeline, then build the lab of nvi-switch.yaml in network
# namespaces and show it at work. The lab stays up for you to use;
# `node bin/nvi-switch.js lab down` removes it. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
nvi() { node bin/nvi-switch.js "$@"; }
id_of() { node -e "import('./dist/src/config/config.js').then(m => console.log(m.loadConfig('nvi-switch.yaml').vms.get('$1').identityText))"; }

trap 'echo "lab.sh: failed; taking the lab down"; nvi lab down >/dev/null 2>&1 || true' ERR

echo; echo "== 1. The shipped captures through host h1's egress and host h2's ingress"
nvi replay --quiet --out out/replay

echo; echo "== 2. The lab: 2 hosts, 2 tenants, 6 VMs in network namespaces"
nvi lab up

echo; echo "== 3. Traffic"
show() { echo "\$ $*"; "$@" 2>&1 | tail -n 2 | sed 's/^/    /' || true; }
show ip netns exec nvi-web1 ping -6 -c 3 -i 0.2 "$(id_of web2)"     # blue, across hosts: ESP
show ip netns exec nvi-web1 ping -6 -c 3 -i 0.2 "$(id_of web3)"     # blue, same host
show ip netns exec nvi-web1 ping -6 -c 2 -W 1 "$(id_of vault1)"     # other tenant: refused
show ip netns exec nvi-db1 ping -6 -c 2 -W 1 "$(id_of web1)"        # initiate-only: db may not open
echo; nvi cables

echo; echo "== 4. Status"
nvi lab status
echo
echo "The lab is up. Try: ip netns exec nvi-web1 ping -6 $(id_of web2)"
echo "                    node bin/nvi-switch.js explain web1 vault1 --live"
echo "Remove it with:     node bin/nvi-switch.js lab down"
