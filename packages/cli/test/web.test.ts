import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type AirllmServer } from '../src/index.js';
import { Reference, SlowEngine } from './helpers.js';

/**
 * The web chat page in a real browser: Debian's chromium (installed by .ci/run) driven by
 * playwright-core. Without chromium this test fails: it is never skipped.
 */
const CHROMIUM = '/usr/bin/chromium';
let engine: SlowEngine;
let ref: Reference;
let server: AirllmServer;
let url: string;
let browser: Browser | undefined;

beforeAll(async () => {
  engine = new SlowEngine();
  ref = new Reference();
  await Promise.all([engine.initialize(), ref.init()]);
  server = createServer(engine);
  ({ url } = await server.listen(0, '127.0.0.1'));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await server?.close({ graceMs: 0 });
  await engine?.cleanup();
  await ref?.cleanup();
});

describe('web chat page', () => {
  it('types a message and sees the answer stream in, equal to a single-request run', async () => {
    // A failure, not a skip, when the browser is missing.
    if (!existsSync(CHROMIUM)) {
      throw new Error(`the browser test needs Debian's chromium at ${CHROMIUM}: install it with "apt-get install -y chromium" (.ci/run does this)`);
    }
    // Running as root (CI) needs --no-sandbox.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const question = 'Tell me about a little dog.';
    const want = await ref.chat([{ role: 'user', content: question }], 60);
    // A pause per token, so the page has time to show the answer growing.
    engine.delayMs = 15;
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
    try {
      await page.goto(`${url}/`);
      await expect.poll(() => page.textContent('#model')).toMatch(/stories260K/);
      await page.click('summary');
      await page.fill('#temperature', '0');
      await page.fill('#maxTokens', '60');
      // Record the answer's length at every change of the conversation.
      // (Browser code as a string: this package is type-checked without DOM types.)
      await page.evaluate(`
        window.lengths = [];
        new MutationObserver(() => {
          const a = document.querySelector('.msg.assistant');
          if (a) window.lengths.push((a.textContent || '').length);
        }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
      `);
      await page.fill('#input', question);
      await page.press('#input', 'Enter');
      await expect.poll(() => page.textContent('.msg.user')).toBe(question);
      // While streaming, the Send button offers Stop.
      await expect.poll(() => page.textContent('#send')).toBe('Stop');
      await page.waitForSelector('.msg.assistant:not(.streaming)', { timeout: 30_000 });
      await page.waitForSelector('.meta');
      expect(await page.textContent('.msg.assistant')).toBe(want.text);
      expect(await page.textContent('.meta')).toMatch(new RegExp(`^${want.tokens} tokens`));
      const lengths = (await page.evaluate('window.lengths')) as number[];
      const distinct = [...new Set(lengths)].filter((n) => n > 0);
      // Many intermediate lengths, growing: the text arrived piece by piece.
      expect(distinct.length).toBeGreaterThan(10);
      expect(distinct).toEqual([...distinct].sort((a, b) => a - b));
      expect(distinct.at(-1)).toBe(want.text.length);
      expect(errors).toEqual([]);
    } finally {
      engine.delayMs = 0;
      await page.close();
    }
  });
});
