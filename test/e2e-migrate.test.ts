// VMs that come, go and move, with the embedded store: test/e2e-migrate-suite.ts.
import { migrateSuite } from './e2e-migrate-suite.js';

migrateSuite({ name: 'migrate' });
