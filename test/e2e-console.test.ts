// The tenant console in a real browser (Debian's chromium driven by playwright-core) against the
// lab, where blue's web3 is not in the web tier and may not reach db1:
//   tenant blue logs in, adds a rule that lets web3 open connections to db1, sees its policy
//   test fail (the row that says web3 -> db1 is refused), and publishing refused; fixes the
//   test and adds one for the reverse; the tests pass; publishes; in the lab web3 now opens a
//   connection to db1 while db1 still cannot open one to web3; the cable shows on the page;
//   web2 migrates and the page shows its new host. Tenant green, logged in next, sees
//   nothing of blue.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { BIN, newLab, sleep, type Lab } from './e2e-fixture.js';

const CHROMIUM = '/usr/bin/chromium';
const PORT = 9481;
const URL_ = `http://127.0.0.1:${PORT}/`;

let lab: Lab;
let consoleProc: ChildProcess | undefined;
let browser: Browser | undefined;

test.before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: bash scripts/setup.sh installs Debian's chromium`);
  lab = newLab('console', {
    set: {
      'tenants.blue.groups.web': ['web1', 'web2'],
      'tenants.blue.tests': [
        { src: 'web1', dst: 'db1', proto: 'tcp', port: 5432, expect: 'plug' },
        { src: 'db1', dst: 'web1', proto: 'tcp', port: 5432, expect: 'unplug' },
        { src: 'web3', dst: 'db1', proto: 'tcp', port: 5432, expect: 'unplug' },
      ],
    },
  });
  await lab.up();
  consoleProc = spawn(process.execPath, [BIN, 'console', '-c', lab.config, '--listen', `127.0.0.1:${PORT}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    consoleProc!.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('console: http') && resolve());
    consoleProc!.once('exit', (code) => reject(new Error(`console exited with ${code}`)));
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

test.after(async () => {
  await browser?.close();
  consoleProc?.kill('SIGTERM');
  await lab.down();
});

async function token(tenant: string): Promise<string> {
  const r = await lab.cli(['tenant', 'token', tenant]);
  assert.is(r.code, 0, r.stderr);
  return r.stdout.trim();
}

async function logIn(tenant: string): Promise<Page> {
  const page = await browser!.newPage();
  await page.goto(URL_);
  await page.fill('#token', await token(tenant));
  await page.click('#enter');
  await page.waitForSelector('#vms tbody tr');
  return page;
}

const id = (vm: string): string => lab.vm(vm).id;

/** Fill a row of the policy form: text fields typed, selects chosen. */
async function fillRow(row: Locator, fields: Record<string, string>): Promise<void> {
  for (const [field, value] of Object.entries(fields)) {
    const input = row.locator(`[data-field=${field}]`);
    if ((await input.evaluate((e) => e.tagName)) === 'SELECT') await input.selectOption(value);
    else await input.fill(value);
  }
}

/** web3 -> db1 and db1 -> web3 by TCP: opened (a server answers), or refused on the way (the connection times out). */
async function reach(): Promise<{ web3ToDb1: boolean; db1ToWeb3: boolean }> {
  const sink = await lab.pyServer('db1', ['tcp-sink', 5432, 6, '--echo']);
  const there = await lab.py('web3', ['tcp-connect', id('db1'), 5432, 2]);
  await lab.py('web3', ['tcp-connect', id('db1'), 5432, 1]).catch(() => ({})); // ends the sink's wait
  await sink.result().catch(() => ({}));
  const back = await lab.py('db1', ['tcp-connect', id('web3'), 5433, 2]);
  // Nobody listens on web3:5433: reaching it is a refusal (RST) at once; being refused on the way, a timeout.
  return { web3ToDb1: there.connected === true, db1ToWeb3: !String(back.error ?? '').includes('timed out') };
}

test('blue adds a rule in the page, fixes its tests, publishes; the lab follows; the cable shows; green sees nothing of blue', async () => {
  assert.equal(await reach(), { web3ToDb1: false, db1ToWeb3: false }, 'before: web3 cannot reach db1');
  const page = await logIn('blue');
  assert.match(await page.textContent('#who') ?? '', /tenant blue/);
  assert.equal(await page.$$eval('#vms tbody tr', (rows) => rows.map((r) => r.getAttribute('data-vm')).sort()), ['db1', 'web1', 'web2', 'web3']);

  // The rule: web3 may open connections to db1.
  await page.click('#add-rule');
  const rule = page.locator('#rules tbody tr').last();
  await fillRow(rule, { name: 'web3-opens-db', from: 'web3', to: 'db1', action: 'initiate', proto: 'tcp', ports: '70000' });
  await page.click('#check');
  await rule.locator('[data-field=ports].bad').waitFor();
  assert.match(await rule.locator('.err').textContent() ?? '', /ports\[0\].*65535/, 'a port out of range is shown at its field, with the message the CLI gives');
  await rule.locator('[data-field=ports]').fill('5432');
  await page.click('#check');
  const web3Test = page.locator('#tests tbody tr').nth(2);
  await web3Test.locator('.result.fail').waitFor();
  assert.match(await web3Test.locator('.result').textContent() ?? '', /FAIL: got plug \(blue\/web3-opens-db\)/, 'the test that says web3 -> db1 is refused now fails, naming the rule');
  await page.click('#publish');
  await page.waitForFunction(() => document.getElementById('status')!.textContent!.startsWith('not published'));

  // What if: the draft's decision for web3 -> db1, step by step.
  await page.selectOption('#wi-src', 'web3');
  await page.selectOption('#wi-dst', 'db1');
  await page.selectOption('#wi-proto', 'tcp');
  await page.fill('#wi-port', '5432');
  await page.click('#what-if');
  await page.waitForFunction(() => /web3 -> db1: plug \(blue\/web3-opens-db\)/.test(document.getElementById('wi-result')!.textContent!));
  assert.ok((await page.$$('#wi-steps li')).length > 0, 'the steps are listed');

  // The tests fixed: web3 -> db1 now plugs; and db1 still cannot open a connection to web3.
  await web3Test.locator('[data-field=expect]').selectOption('plug');
  await page.click('#add-test');
  await fillRow(page.locator('#tests tbody tr').last(), { src: 'db1', dst: 'web3', proto: 'tcp', port: '5432', expect: 'unplug' });
  await page.click('#check');
  await page.waitForFunction(() => /4 passed, 0 failed/.test(document.getElementById('status')!.textContent!));
  await page.click('#publish');
  await page.waitForFunction(() => /published as revision \d+/.test(document.getElementById('status')!.textContent!));

  // The lab follows the published policy.
  let now = await reach();
  for (let k = 0; k < 10 && !now.web3ToDb1; k++) {
    await sleep(500);
    now = await reach();
  }
  assert.equal(now, { web3ToDb1: true, db1ToWeb3: false }, 'after: web3 opens connections to db1, db1 still none to web3');

  // The page shows the cable, in the table and in the picture, without a reload.
  await page.waitForSelector('#cables tbody tr[data-pair="web3 -> db1"]', { timeout: 10_000 });
  await page.waitForSelector('#graph line[data-pair="web3 -> db1"][data-state="plugged"]', { state: 'attached', timeout: 10_000 }); // a level line has no height: attached, not visible
  const rows = await page.$$eval('#cables tbody tr[data-pair="web3 -> db1"]', (trs) => trs.map((tr) => tr.textContent));
  assert.ok(rows.some((t) => /plugged/.test(t ?? '') && /blue\/web3-opens-db/.test(t ?? '')), `the cable with its rule: ${rows.join(' | ')}`);

  // A VM's location changes on the page when it migrates.
  const m = await lab.cli(['lab', 'migrate', 'web2', '--to', 'h1'], 60);
  assert.is(m.code, 0, m.stderr + m.stdout);
  await page.waitForFunction(() => document.querySelector('#vms tr[data-vm="web2"] .host')?.textContent === 'h1', undefined, { timeout: 10_000 });

  // Green sees its own network only.
  const green = await logIn('green');
  const seen = await green.textContent('main') ?? '';
  assert.match(seen, /vault1/);
  for (const name of ['web1', 'web2', 'web3', 'db1', 'web-mesh', 'web3-opens-db']) assert.not.match(seen, new RegExp(name), `green's page shows no ${name}`);
});

test.run();
