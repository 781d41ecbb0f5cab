// What the browser checks share (tests/browser/api.mjs, bench/browser/configurator.mjs):
// headless Debian Chromium through playwright-core, and the sha256 of a downloaded file.
// env: CHROMIUM (default /usr/bin/chromium), PLAYWRIGHT_CORE (the module's path; default the
// `playwright-core` package).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

// A headless Chromium (a playwright-core Browser).
export async function launchChromium() {
  const { chromium } = await import(process.env.PLAYWRIGHT_CORE ?? 'playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    // Without the background-networking flags Chromium keeps calling out to the closed network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// The sha256 of the file at `path`, as lower-case hex.
export const sha256File = (path) => createHash('sha256').update(readFileSync(path)).digest('hex');
