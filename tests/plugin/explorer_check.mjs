// Opens a study's page in Orthanc Explorer with Debian's chromium (headless,
// through playwright-core; no browser is downloaded) and reports what the
// UniMed extension shows, as one JSON line on stdout.
//   node explorer_check.mjs URL STUDY_ID [CHROMIUM]
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, study, exe = '/usr/bin/chromium'] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'unimed-chromium-'));  // empty --user-data-dir
const out = { errors: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: exe,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => out.errors.push(String(e)));
  await page.goto(`${url}/app/explorer.html#study?uuid=${study}`);
  await page.waitForSelector('#unimed-findings tr.unimed-finding', { timeout: 30000 });
  out.rows = await page.$$eval('#unimed-findings tr.unimed-finding', (trs) =>
    trs.map((tr) => Array.from(tr.children).map((td) => td.textContent)));
  out.state = await page.getAttribute('#unimed-panel .unimed-state', 'data-state');
  out.sr_href = await page.getAttribute('#unimed-sr-link', 'href');
  // Re-analyse: the button posts to .../analyze and the panel follows the state.
  const posted = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith(`/studies/${study}/analyze`));
  await page.click('#unimed-reanalyse');
  out.reanalyse_posted = !!(await posted);
  await page.waitForSelector('#unimed-findings tr.unimed-finding', { timeout: 30000 });
  // The SR link opens the SR's instance page.
  await page.click('#unimed-sr-link');
  await page.waitForFunction(() => location.hash.startsWith('#instance'), null, { timeout: 10000 });
  out.after_click = await page.evaluate(() => location.hash);
} catch (e) {
  out.errors.push(String(e));
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
