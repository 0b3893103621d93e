// A screenshot of a study's page in Orthanc Explorer with the UniMed panel
// (and, with "report", of the rendered report it links to).
//   node explorer_shot.mjs URL STUDY_ID OUT.png [report] [CHROMIUM]
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, study, png, report = '', exe = '/usr/bin/chromium'] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'unimed-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: exe, headless: true, viewport: { width: 1280, height: 1100 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  });
  const page = context.pages()[0] || await context.newPage();
  await page.goto(`${url}/app/explorer.html#study?uuid=${study}`);
  await page.waitForSelector('#unimed-panel .unimed-state:not([data-state="loading"])', { timeout: 30000 });
  await page.screenshot({ path: png, fullPage: true });
  if (report) {
    await page.click('#unimed-report-link');
    await page.waitForSelector('#unimed-back-link', { timeout: 30000 });
    await page.screenshot({ path: png.replace(/\.png$/, '-report.png'), fullPage: true });
  }
} catch (e) {
  console.error(String(e));
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
