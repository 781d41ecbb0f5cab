// The stock QMK Configurator, built from its own repository and pointed at Oven, driven in a
// real Chromium (playwright-core): for each keyboard, open it, let the Configurator load its
// bundled default keymap, press Compile, wait for the firmware button, and download the
// firmware and the full source with the Configurator's own buttons. Each download must be
// the job's own artifact: the firmware's file name and sha256 equal to the result's
// `firmware_filename` and `firmware_sha256`, the source archive's sha256 equal to
// `source_archive_sha256` (contract §6.3; README "Reproducible firmware").
//
// usage: node configurator.mjs --oven URL --configurator URL --keyboards kb[,kb...]
// env:   CHROMIUM (default /usr/bin/chromium), PLAYWRIGHT_CORE (the module's path)
// Prints one line per keyboard and exits non-zero when any check fails.
import { parseArgs } from 'node:util';
import { launchChromium, sha256File as sha256 } from '../../tests/browser/chromium.mjs';

const { values: opt } = parseArgs({
  options: {
    oven: { type: 'string' },
    configurator: { type: 'string' },
    keyboards: { type: 'string' },
    timeout: { type: 'string', default: '600' },
  },
});
if (!opt.oven || !opt.configurator || !opt.keyboards) {
  console.error('usage: node configurator.mjs --oven URL --configurator URL --keyboards kb[,kb...]');
  process.exit(2);
}
const api = opt.oven.replace(/\/$/, '');
const timeout = Number(opt.timeout) * 1000;

const browser = await launchChromium();
const terminal = (page) => page.locator('#terminal').inputValue();
const enabled = (page, sel) =>
  page.waitForFunction((s) => { const b = document.querySelector(s); return b && !b.disabled; }, sel, { timeout });

let failures = 0;
for (const keyboard of opt.keyboards.split(',').filter(Boolean)) {
  const ctx = await browser.newContext({ acceptDownloads: true });
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', (d) => { problems.push(`alert: ${d.message()}`); d.dismiss(); });
  // Every API answer the Configurator gets; CORS failures show as failed requests.
  page.on('requestfailed', (r) => {
    // A navigation that turns into a download is reported as aborted; the download is checked.
    if (r.isNavigationRequest() && r.failure()?.errorText === 'net::ERR_ABORTED') return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  const spinner = new Set();
  try {
    const t0 = Date.now();
    // The layout in the route is only a start: loading the default keymap sets its own.
    await page.goto(`${opt.configurator}/#/${keyboard}/LAYOUT`);
    await page.waitForFunction(() => document.querySelector('#terminal')?.value.includes('Loaded '), null, { timeout: 60000 });
    await page.locator('#compile').click();
    // "Waiting for Oven" / "Baking" / "Done!", as the user sees them.
    const watch = setInterval(async () => {
      const t = await page.locator('.spinner .status').allInnerTexts().catch(() => []);
      t.forEach((x) => x.trim() && spinner.add(x.trim()));
    }, 200);
    // Done when the firmware button comes on, or when the Configurator reports a failure.
    await page.waitForFunction(() => {
      const b = document.querySelector('#fwFile');
      const log = document.querySelector('#terminal')?.value ?? '';
      return (b && !b.disabled) || log.includes('* Failed') || log.includes('* Error');
    }, null, { timeout });
    clearInterval(watch);
    const log = await terminal(page);
    const id = log.match(/Received job_id: ([0-9a-f-]{36})/)?.[1];
    if (!id) throw new Error(`no job id in the Configurator's log: ${log.slice(-400)}`);
    const job = await (await fetch(`${api}/v1/compile/${id}`)).json();
    const r = job.result ?? {};
    if (job.status !== 'finished' || r.returncode !== 0) throw new Error(`job ${id} ${job.status}: ${r.output?.slice(-400)}`);
    if (!log.includes('* Finished')) problems.push('the log lacks "* Finished"');

    const [fw] = await Promise.all([page.waitForEvent('download'), page.locator('#fwFile').click()]);
    const fwSha = sha256(await fw.path());
    if (fw.suggestedFilename() !== r.firmware_filename) problems.push(`firmware saved as ${fw.suggestedFilename()}, result says ${r.firmware_filename}`);
    if (fwSha !== r.firmware_sha256) problems.push(`firmware sha256 ${fwSha} != result ${r.firmware_sha256}`);

    await enabled(page, '#source');
    const [src] = await Promise.all([page.waitForEvent('download'), page.locator('#source').click()]);
    const srcSha = sha256(await src.path());
    if (srcSha !== r.source_archive_sha256) problems.push(`source sha256 ${srcSha} != result ${r.source_archive_sha256}`);

    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    console.log(`${problems.length ? 'FAIL' : 'ok  '} ${keyboard.padEnd(28)} job ${id} ${r.firmware_filename} ` +
      `sha256 ${fwSha.slice(0, 12)} (${fwSha === r.firmware_sha256 ? '=' : '!='} result) source ${src.suggestedFilename()} ${srcSha.slice(0, 12)} ${secs} s; ` +
      `spinner: ${[...spinner].join(' > ') || '-'}`);
  } catch (e) {
    problems.push(e.message.split('\n')[0]);
    console.log(`FAIL ${keyboard}`);
  }
  for (const p of problems) console.log(`     ${p}`);
  failures += problems.length ? 1 : 0;
  await ctx.close();
}
await browser.close();
process.exit(failures ? 1 : 0);
