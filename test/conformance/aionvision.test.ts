import { aionvisionFixture } from './fixtures/aionvision.js';
import { conformanceSuite } from './suite.js';

conformanceSuite(aionvisionFixture);
