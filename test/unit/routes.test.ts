import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { globToRegExp, IncidentRouter } from '../../src/watch/routes.js';

describe('routes', () => {
  it('matches folder globs', () => {
    expect(globToRegExp('site-a/**').test('site-a/2024/inc-1')).toBe(true);
    expect(globToRegExp('site-a/**').test('site-b/inc-1')).toBe(false);
    expect(globToRegExp('*/inc-?').test('site-a/inc-1')).toBe(true);
    expect(globToRegExp('*/inc-?').test('site-a/x/inc-1')).toBe(false);
    expect(globToRegExp('**/lobby*').test('lobby-cam')).toBe(true);
    expect(globToRegExp('**/lobby*').test('a/b/lobby-cam')).toBe(true);
    expect(globToRegExp('a.b/(x)').test('a.b/(x)')).toBe(true);
    expect(globToRegExp('a.b').test('axb')).toBe(false);
  });

  it('sends every incident everywhere without routes, else the first matching route decides', () => {
    expect(new IncidentRouter('/x', undefined, ['alo', 'aion']).targetsFor('/x/any')).toEqual(['alo', 'aion']);
    const router = new IncidentRouter(
      '/x',
      [
        { match: 'north/**', targets: ['aion'] },
        { match: '**', targets: ['alo'] },
      ],
      ['alo', 'aion'],
    );
    expect(router.targetsFor('/x/north/2024/inc-1')).toEqual(['aion']);
    expect(router.targetsFor('/x/south/inc-2')).toEqual(['alo']);
    expect(new IncidentRouter('/x', [{ match: 'north/*', targets: ['aion'] }], ['alo', 'aion']).targetsFor('/x/south/inc')).toEqual([]);
  });
});

describe('routes in the configuration', () => {
  const base = `
watch: { root: /srv/exports }
targets:
  alo: { type: alo, base_url: "https://api.alo.ai/v1", auth: { bearer: t } }
  alo2: { type: alo, base_url: "https://other.alo.ai/v1", auth: { bearer: t } }
`;
  it('resolves routes in file order', () => {
    const config = parseConfig(`${base}routes:\n  - { match: "north/**", targets: [alo2] }\n  - { match: "**", targets: [alo, alo2] }\n`);
    expect(config.routes).toEqual([
      { match: 'north/**', targets: ['alo2'] },
      { match: '**', targets: ['alo', 'alo2'] },
    ]);
    expect(parseConfig(base).routes).toBeUndefined();
  });

  it('names an unknown target and a bad route by their YAML path', () => {
    expect(() => parseConfig(`${base}routes:\n  - { match: "north/**", targets: [aion] }\n  - { match: "", targets: [] }\n`)).toThrow(
      expect.objectContaining({
        problems: [
          'routes[0].targets[0]: unknown target "aion" (configured: alo, alo2)',
          expect.stringMatching(/^routes\[1\]\.match: expected a folder glob/),
          expect.stringMatching(/^routes\[1\]\.targets: expected a non-empty list of target names/),
        ],
      }),
    );
  });
});
