// The lab end to end with two data-path threads per host (switch.workers: 2): the tests of
// test/e2e-lab-suite.ts, where web1 and web3 (both on h1) and web2 and db1 (both on h2) are
// owned by different workers, so their pairs cross from one worker to the other.
import { labSuite } from './e2e-lab-suite.js';

labSuite({ name: 'lab-workers', full: false, workers: 2 });
