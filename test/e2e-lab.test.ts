// The lab end to end with the embedded store: every test of test/e2e-lab-suite.ts.
import { labSuite } from './e2e-lab-suite.js';

labSuite({ name: 'lab', full: true });
