// The API as a browser on another origin sees it (scripts/browser-check.sh runs this in the test
// command): headless Chromium loads a page from a second local server and, from that page, does
// what the Configurator does (src/api.js of qmk/qmk_configurator): GET /v1 and the keymap
// skeleton, POST the keymap as JSON (a CORS preflight), poll the job, then download the firmware,
// the keymap and the source through an <a download> link. Every download must be the job's own
// artifact (the saved name and sha256 are the result's), and refusals must be readable JSON
// that names the field (contract §2.3 CORS, §6.3 result, README "Content-Disposition").
//
// usage: node api.mjs --oven URL --page URL   (env CHROMIUM, PLAYWRIGHT_CORE)
import assert from 'node:assert/strict';
import { parseArgs } from 'node:util';
import { launchChromium, sha256File } from './chromium.mjs';

const { values: opt } = parseArgs({ options: { oven: { type: 'string' }, page: { type: 'string' } } });
const api = opt.oven.replace(/\/$/, '');
const browser = await launchChromium();
const ctx = await browser.newContext({ acceptDownloads: true });
const page = await ctx.newPage();
await page.goto(opt.page);
assert.notEqual(new URL(opt.page).origin, new URL(api).origin, 'the page must be on another origin');

// fetch from the page: status and parsed body (or null). A response without CORS headers
// makes fetch throw here, which fails the check.
const call = (url, init) => page.evaluate(async ([url, init]) => {
  const r = await fetch(url, init);
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, body };
}, [url, init ?? {}]);
const postJson = (body) => call(`${api}/v1/compile`, {
  method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
});

async function finished(id) {
  for (let i = 0; i < 600; i++) {
    const s = await call(`${api}/v1/compile/${id}`);
    assert.equal(s.status, 200, `status of ${id}`);
    if (s.body.status === 'finished' || s.body.status === 'failed') return s.body;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}

// The Configurator's way of saving a file: a temporary <a download> clicked by script.
async function download(url) {
  const [d] = await Promise.all([
    page.waitForEvent('download'),
    page.evaluate((u) => { const a = document.createElement('a'); a.href = u; a.download = ''; document.body.append(a); a.click(); a.remove(); }, url),
  ]);
  const path = await d.path();
  assert.ok(path, `download of ${url} failed: ${await d.failure()}`);
  return { name: d.suggestedFilename(), sha256: sha256File(path) };
}

const checks = [];
const check = async (name, fn) => { await fn(); checks.push(name); console.log(`ok   ${name}`); };

await check('GET /v1 from another origin', async () => {
  const r = await call(`${api}/v1`);
  assert.equal(r.status, 200);
  assert.ok(['running', 'degraded'].includes(r.body.status), JSON.stringify(r.body));
  assert.equal(typeof r.body.queue_length, 'number');
});

let template;
await check('GET /v1/skeletons/keymap', async () => {
  const r = await call(`${api}/v1/skeletons/keymap`);
  assert.equal(r.status, 200);
  template = r.body;
  assert.ok('documentation' in template && 'layers' in template);
});

// The names a browser saves under (JobResult::download_name, Content-Disposition with RFC 8187's
// filename*): the keymap name as typed, where the result's firmware_filename keeps to
// [A-Za-z0-9._-] (keymap::names).
const saved = {
  browser: ['fakekb_browser.hex', 'fakekb-browser.json', 'qmk_firmware-fakekb-browser.zip'],
  "clavier é d'or": ["fakekb_clavier é d'or.hex", "fakekb-clavier é d'or.json", "qmk_firmware-fakekb-clavier é d'or.zip"],
};
for (const keymap of Object.keys(saved)) {
  await check(`compile, poll and download keymap ${JSON.stringify(keymap)}`, async () => {
    // As the Configurator builds its request: the skeleton with the user's fields over it.
    const body = { ...template, keyboard: 'fakekb', keymap, layout: 'LAYOUT_ortho_2x2',
      layers: [['KC_A', 'KC_B', 'KC_C', 'KC_D']] };
    const r = await postJson(body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.enqueued, true);
    const job = await finished(r.body.job_id);
    assert.equal(job.status, 'finished');
    const res = job.result;
    assert.equal(res.returncode, 0, res.output);
    const fw = await download(res.firmware_binary_url[0]);
    assert.equal(fw.sha256, res.firmware_sha256, 'firmware bytes');
    assert.equal(fw.name, saved[keymap][0], 'the name the browser saves the firmware under');
    const km = await download(res.firmware_keymap_url[0]);
    assert.equal(km.sha256, res.keymap_sha256, 'keymap bytes');
    assert.equal(km.name, saved[keymap][1]);
    const src = await download(res.firmware_source_url[0]);
    assert.equal(src.sha256, res.source_archive_sha256, 'source archive bytes');
    assert.equal(src.name, saved[keymap][2]);
    console.log(`     saved ${fw.name}, ${km.name}, ${src.name}`);
  });
}

await check('a refused keymap is readable JSON naming the field', async () => {
  const r = await postJson({ ...template, keyboard: 'fakekb', keymap: 'x', layout: 'LAYOUT_ortho_2x2',
    layers: [['KC_A', 'KC_B', 'KC_C', 'KC_D); evil(']] });
  assert.equal(r.status, 400);
  assert.match(JSON.stringify(r.body), /layers\[0\]\[3\]/);
});

await check('an unknown job is a readable JSON 404', async () => {
  const r = await call(`${api}/v1/compile/00000000-0000-4000-8000-000000000000`);
  assert.equal(r.status, 404);
  assert.ok(r.body && typeof r.body.message === 'string', JSON.stringify(r.body));
});

await browser.close();
console.log(`browser check: ${checks.length} checks passed`);
