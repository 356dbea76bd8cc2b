// The lab end to end with its mapping store on etcd, on the fabric (the switches reach it over
// the underlay): the traffic, tenant, diode, initiate-only, explain and forged-source tests
// of test/e2e-lab-suite.ts.
import { labSuite } from './e2e-lab-suite.js';

labSuite({ name: 'lab-etcd', etcd: 1, full: false });
