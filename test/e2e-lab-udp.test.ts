// The lab end to end with ESP in UDP on the underlay (underlay.espUdpPort: 4500) and two
// data-path threads per host, each with its socket of the host's ESP-in-UDP group: the tests
// of test/e2e-lab-suite.ts, the restart's handover of the third underlay socket among them, and
// a capture of the underlay that shows ESP in UDP, runs of it in one datagram, and no protocol 50.
// (One thread with ESP in UDP: test/udp-esp-underlay.test.ts, and the lab bench.)
import { labSuite } from './e2e-lab-suite.js';

labSuite({ name: 'lab-udp', full: false, workers: 2, espUdpPort: 4500 });
