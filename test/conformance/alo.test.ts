import { aloFixture } from './fixtures/alo.js';
import { conformanceSuite } from './suite.js';

conformanceSuite(aloFixture);
