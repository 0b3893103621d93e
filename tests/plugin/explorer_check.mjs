// Opens studies' pages in Orthanc Explorer with Debian's chromium (headless,
// through playwright-core; no browser is downloaded) and reports what the
// UniMed extension shows, as one JSON line on stdout.
//   node explorer_check.mjs URL STUDY_A STUDY_B [CHROMIUM]
// The panel must always belong to the study in the address: after a direct
// address change (A -> B, which does not fire pagebeforeshow), after back
// and forward, and for two studies opened in sequence from the study list.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, studyA, studyB, exe = '/usr/bin/chromium'] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'unimed-chromium-'));  // empty --user-data-dir
const out = { errors: [], belongs: {} };
let context;

// Which study the panel shows once it has settled, or null.
async function panelStudy(page, expect) {
  try {
    await page.waitForFunction((id) => {
      const p = document.querySelector('#unimed-panel');
      const s = p && p.querySelector('.unimed-state');
      return p && s && s.getAttribute('data-state') !== 'loading' && p.getAttribute('data-study') === id;
    }, expect, { timeout: 20000 });
  } catch (e) { /* reported below */ }
  return page.evaluate(() => {
    const p = document.querySelector('#unimed-panel');
    return p ? p.getAttribute('data-study') : null;
  });
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: exe,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => out.errors.push(String(e)));
  await page.goto(`${url}/app/explorer.html#study?uuid=${studyA}`);
  await page.waitForSelector('#unimed-findings tr.unimed-finding', { timeout: 30000 });
  out.rows = await page.$$eval('#unimed-findings tr.unimed-finding', (trs) =>
    trs.map((tr) => Array.from(tr.children).map((td) => td.textContent)));
  out.check_rows = await page.$$eval('#unimed-modality-check tr.unimed-finding', (trs) => trs.length);
  out.model_text = await page.textContent('#unimed-panel .unimed-model');
  out.label_sets = await page.$$eval('#unimed-panel .unimed-label-sets li', (li) => li.map((x) => x.textContent));
  out.state = await page.getAttribute('#unimed-panel .unimed-state', 'data-state');
  out.sr_href = await page.getAttribute('#unimed-sr-link', 'href');
  out.belongs.first = await panelStudy(page, studyA);
  // Direct address change A -> B.
  await page.evaluate((b) => { window.location.hash = '#study?uuid=' + b; }, studyB);
  out.belongs.address_change = await panelStudy(page, studyB);
  // Back (to A) and forward (to B).
  await page.goBack();
  out.belongs.back = await panelStudy(page, studyA);
  await page.goForward();
  out.belongs.forward = await panelStudy(page, studyB);
  // Two studies in sequence through the study list.
  for (const id of [studyA, studyB]) {
    await page.evaluate(() => { window.location.hash = '#find-studies'; });
    await page.waitForTimeout(300);
    await page.evaluate((x) => { window.location.hash = '#study?uuid=' + x; }, id);
    out.belongs['sequence_' + (id === studyA ? 'a' : 'b')] = await panelStudy(page, id);
  }
  // Back on A: re-analyse posts and the panel follows the state.
  await page.evaluate((a) => { window.location.hash = '#study?uuid=' + a; }, studyA);
  await panelStudy(page, studyA);
  await page.waitForSelector('#unimed-findings tr.unimed-finding', { timeout: 30000 });
  const posted = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith(`/studies/${studyA}/analyze`));
  await page.click('#unimed-reanalyse');
  out.reanalyse_posted = !!(await posted);
  await page.waitForSelector('#unimed-findings tr.unimed-finding', { timeout: 30000 });
  // The report: one click away, readable, with a way back.
  await page.click('#unimed-report-link');
  await page.waitForSelector('#unimed-back-link', { timeout: 30000 });
  out.report_title = await page.title();
  out.report_has_probability = (await page.content()).includes('Probability');
  await page.click('#unimed-back-link');
  out.back_from_report = await panelStudy(page, studyA);
  // The SR instance link opens the SR's instance page.
  await page.waitForSelector('#unimed-sr-link', { timeout: 30000 });
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
