import { describe, expect, it } from 'vitest';
import { TargetError } from '../../src/targets/target.js';
import { UrlCache, type FetchedUrl } from '../../src/targets/url-cache.js';

const url = (part: number): string => `https://bucket.example/key?partNumber=${part}&X-Amz-Expires=3600&X-Amz-Date=${amzNow()}`;

function amzNow(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
}

/** A fetcher for one part's URL, like Aionvision's chunks/retry, answering when released. */
function onePart(part: number, calls: number[]): () => Promise<FetchedUrl[]> {
  return async () => {
    calls.push(part);
    await new Promise((r) => setTimeout(r, 5));
    return [{ part, url: url(part) }];
  };
}

describe('UrlCache', () => {
  it('gives each of several parts asked for at once its own URL when the platform hands them out one at a time', async () => {
    const cache = new UrlCache();
    const calls: number[] = [];
    const urls = await Promise.all([3, 4, 5].map((n) => cache.get('u', n, onePart(n, calls))));
    expect(urls.map((u) => new URL(u).searchParams.get('partNumber'))).toEqual(['3', '4', '5']);
    expect(calls.sort()).toEqual([3, 4, 5]);
  });

  it('shares one request when it brings the URLs of every part waiting', async () => {
    const cache = new UrlCache();
    let calls = 0;
    const all = async (): Promise<FetchedUrl[]> => {
      calls++;
      await new Promise((r) => setTimeout(r, 5));
      return [1, 2, 3].map((part) => ({ part, url: url(part) }));
    };
    await Promise.all([1, 2, 3].map((n) => cache.get('u', n, all)));
    expect(calls).toBe(1);
  });

  it('fails for good when the platform answers without the part, and lets a waiter fetch its own after a failed request', async () => {
    const cache = new UrlCache();
    await expect(cache.get('u', 7, async () => [{ part: 8, url: url(8) }])).rejects.toMatchObject({
      kind: 'permanent',
      message: 'the platform handed out no URL for part 7',
    });
    const failing = cache.get('v', 1, async () => {
      await new Promise((r) => setTimeout(r, 5));
      throw new TargetError('retryable', 'platform down');
    });
    const waiter = cache.get('v', 2, onePart(2, []));
    await expect(failing).rejects.toThrow('platform down');
    await expect(waiter).resolves.toContain('partNumber=2');
  });

  it('never hands out a dropped URL, nor those of a forgotten upload', async () => {
    const cache = new UrlCache();
    cache.put('u', [
      { part: 1, url: url(1) },
      { part: 2, url: url(2) },
    ]);
    cache.drop('u', 1);
    expect(cache.fresh('u', 1)).toBeUndefined();
    expect(cache.fresh('u', 2)).toContain('partNumber=2');
    cache.forget('u');
    expect(cache.fresh('u', 2)).toBeUndefined();
  });
});
