// The lab end to end with ESP in UDP on the underlay (underlay.espUdpPort: 4500): the tests of
// test/e2e-lab-suite.ts, the restart's handover of the third underlay socket among them, and a
// capture of the underlay that shows ESP in UDP, runs of it in one datagram, and no protocol 50.
import { labSuite } from './e2e-lab-suite.js';

labSuite({ name: 'lab-udp', full: false, espUdpPort: 4500 });
