// VMs that come, go and move, with the store on etcd on the fabric: test/e2e-migrate-suite.ts.
import { migrateSuite } from './e2e-migrate-suite.js';

migrateSuite({ name: 'migrate-etcd', etcd: 1 });
