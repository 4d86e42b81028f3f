import { valtFixture } from './fixtures/valt.js';
import { conformanceSuite } from './suite.js';

conformanceSuite(valtFixture);
