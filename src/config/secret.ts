import util from 'node:util';

/**
 * A credential from the configuration. The value lives in a private field, so logging,
 * JSON serialisation, string interpolation, util.inspect, Object.keys/spread and
 * structuredClone all see a mask; only an explicit `reveal()` at the point of use
 * (an HTTP header, a login body) gets the real text.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    if (typeof value !== 'string') throw new TypeError('Secret value must be a string');
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return '***';
  }

  toJSON(): string {
    return '***';
  }

  [Symbol.toPrimitive](): string {
    return '***';
  }

  [util.inspect.custom](): string {
    return 'Secret(***)';
  }
}
