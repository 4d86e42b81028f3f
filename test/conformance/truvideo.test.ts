import { truvideoFixture } from './fixtures/truvideo.js';
import { conformanceSuite } from './suite.js';

conformanceSuite(truvideoFixture);
