// The tenant console's page: plain DOM, no framework, every value set as text (never as HTML).
// It speaks only the API (GET /openapi.json documents it) with the token the user typed.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem('nvi-token') || '', tenant: '', revision: 0, vms: [], timer: 0 };

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${state.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const type = r.headers.get('content-type') || '';
  const data = type.includes('json') ? await r.json() : await r.text();
  if (!r.ok) throw Object.assign(new Error((data && data.error) || `${r.status}`), { status: r.status, data });
  return data;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ---- login -------------------------------------------------------------------------------

async function login() {
  $('login-error').textContent = '';
  try {
    const who = await api('GET', '/api/whoami');
    const tenants = await api('GET', '/api/tenants');
    sessionStorage.setItem('nvi-token', state.token);
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    $('who').textContent = who.kind === 'operator' ? 'operator' : `tenant ${who.tenant}`;
    $('tenant').hidden = who.kind !== 'operator';
    $('hosts-section').hidden = who.kind !== 'operator';
    state.operator = who.kind === 'operator';
    fill($('tenant'), tenants.map((t) => el('option', { value: t }, t)));
    await openTenant(tenants[0]);
  } catch (e) {
    $('login-error').textContent = e.status === 401 ? 'that token is not valid' : e.message;
  }
}

async function openTenant(name) {
  state.tenant = name;
  $('tenant').value = name;
  await loadPolicy();
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => refresh().catch(() => {}), 2000);
}

// ---- what the tenant has: VMs, cables, the picture ------------------------------------------

async function refresh() {
  const t = encodeURIComponent(state.tenant);
  const [vms, cables] = await Promise.all([api('GET', `/api/tenants/${t}/vms`), api('GET', `/api/tenants/${t}/cables`)]);
  state.vms = vms;
  if (state.operator) {
    const hosts = await api('GET', '/api/hosts');
    fill($('hosts').tBodies[0], hosts.map((h) => el('tr', {}, el('td', {}, h.host), el('td', {}, h.running ? 'answers' : 'not running'))));
  }
  fill($('vms').tBodies[0], vms.map((v) => el('tr', { dataset: { vm: v.name } },
    el('td', {}, v.name), el('td', {}, el('code', {}, v.identity)), el('td', { className: 'host' }, v.host ?? '-'),
    el('td', {}, v.epoch ?? '-'), el('td', {}, v.state))));
  fill($('cables').tBodies[0], cables.map((c) => el('tr', { dataset: { pair: `${c.srcVm ?? c.src} -> ${c.dstVm ?? c.dst}` } },
    el('td', {}, c.host), el('td', {}, `${c.srcVm ?? c.src} -> ${c.dstVm ?? c.dst}`), el('td', {}, c.state), el('td', {}, c.rule),
    el('td', {}, c.packets), el('td', {}, c.bytes), el('td', {}, c.drops))));
  for (const id of ['wi-src', 'wi-dst']) {
    const keep = $(id).value;
    fill($(id), vms.map((v) => el('option', { value: v.name }, v.name)));
    if (keep) $(id).value = keep;
  }
  draw(vms, cables);
}

function draw(vms, cables) {
  const svg = $('graph');
  const ns = 'http://www.w3.org/2000/svg';
  const node = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const names = [...new Set([...vms.map((v) => v.name), ...cables.flatMap((c) => [c.srcVm ?? c.src, c.dstVm ?? c.dst])])];
  const at = new Map(names.map((n, k) => {
    const a = (2 * Math.PI * k) / Math.max(names.length, 1) - Math.PI / 2;
    return [n, [260 + 190 * Math.cos(a), 130 + 100 * Math.sin(a)]];
  }));
  const parts = [];
  for (const c of cables) {
    if (c.direction !== 'egress') continue;
    const [x1, y1] = at.get(c.srcVm ?? c.src);
    const [x2, y2] = at.get(c.dstVm ?? c.dst);
    const plugged = c.state.startsWith('plugged');
    parts.push(node('line', { x1, y1, x2, y2, stroke: plugged ? '#1a7f37' : '#b3261e', 'stroke-width': plugged ? 2 : 1, 'stroke-dasharray': plugged ? '' : '4 3', 'data-pair': `${c.srcVm ?? c.src} -> ${c.dstVm ?? c.dst}`, 'data-state': plugged ? 'plugged' : 'unplugged' }));
  }
  for (const [n, [x, y]] of at) {
    const own = vms.some((v) => v.name === n);
    parts.push(node('circle', { cx: x, cy: y, r: 7, fill: own ? '#1b2a41' : '#bbb' }));
    parts.push(node('text', { x: x + 10, y: y + 4 }, own ? n : `${n.slice(0, 14)}…`));
  }
  svg.replaceChildren(...parts);
}

// ---- the policy form ---------------------------------------------------------------------

function input(value, field, cls = '') {
  return el('input', { value: value ?? '', className: cls, dataset: { field } });
}

function select(value, field, options) {
  const s = el('select', { dataset: { field } }, ...options.map((o) => el('option', { value: o }, o || 'any')));
  s.value = value ?? options[0];
  return s;
}

function removeButton() {
  return el('button', { type: 'button', onclick: (e) => e.target.closest('tr').remove() }, '×');
}

const cell = (...c) => el('td', {}, ...c);

function groupRow(name, members) {
  return el('tr', {}, cell(input(name, 'name')), cell(input((members || []).join(', '), 'members', 'wide')), cell(removeButton()));
}

function ruleRow(r = {}) {
  const w = r.when || {};
  const window = w.from || w.to ? `${w.from || ''}-${w.to || ''}` : '';
  const encrypt = el('input', { type: 'checkbox', checked: r.encrypt !== false, dataset: { field: 'encrypt' } });
  return el('tr', {},
    cell(input(r.name, 'name')), cell(input(r.from, 'from')), cell(input(r.to, 'to')),
    cell(select(r.action, 'action', ['plug', 'unplug', 'diode', 'initiate'])),
    cell(input(r.proto === undefined ? '' : String(r.proto), 'proto', 'narrow')),
    cell(input((r.ports || []).join(', '), 'ports')),
    cell(input((w.days || []).join(','), 'days', 'narrow')), cell(input(window, 'window', 'narrow')), cell(input(w.tz, 'tz', 'narrow')),
    cell(encrypt), cell(removeButton()));
}

function testRow(t = {}) {
  return el('tr', {},
    cell(input(t.src, 'src', 'narrow')), cell(input(t.dst, 'dst', 'narrow')), cell(input(t.proto === undefined ? '' : String(t.proto), 'proto', 'narrow')),
    cell(input(t.port === undefined ? '' : String(t.port), 'port', 'narrow')), cell(select(t.expect, 'expect', ['plug', 'unplug'])),
    el('td', { className: 'result' }), cell(removeButton()));
}

async function loadPolicy() {
  const p = await api('GET', `/api/tenants/${encodeURIComponent(state.tenant)}/policy`);
  state.revision = p.revision;
  fill($('groups').tBodies[0], Object.entries(p.groups || {}).map(([g, m]) => groupRow(g, m)));
  fill($('rules').tBodies[0], (p.rules || []).map(ruleRow));
  fill($('tests').tBodies[0], (p.tests || []).map(testRow));
  fill($('levels').tBodies[0], Object.entries(p.levels || {}).map(([vm, level]) =>
    el('tr', { dataset: { vm } }, cell(vm), cell(input(level === null ? '' : String(level), 'level', 'narrow')))));
  $('status').textContent = `revision ${p.revision}`;
}

const value = (row, field) => row.querySelector(`[data-field="${field}"]`);
const text = (row, field) => value(row, field).value.trim();
const list = (s) => s.split(/[,\s]+/).filter(Boolean);
const numberOr = (s) => (/^\d+$/.test(s) ? Number(s) : s);

/** The form as the API takes it: only the fields the user filled in. */
function draft() {
  const groups = {};
  for (const row of $('groups').tBodies[0].rows) if (text(row, 'name')) groups[text(row, 'name')] = list(text(row, 'members'));
  const rules = [...$('rules').tBodies[0].rows].map((row) => {
    const r = { from: text(row, 'from'), to: text(row, 'to'), action: value(row, 'action').value };
    if (text(row, 'name')) r.name = text(row, 'name');
    if (text(row, 'proto')) r.proto = numberOr(text(row, 'proto'));
    if (text(row, 'ports')) r.ports = list(text(row, 'ports')).map(numberOr);
    const when = {};
    if (text(row, 'days')) when.days = list(text(row, 'days'));
    if (text(row, 'window')) [when.from, when.to] = text(row, 'window').split('-');
    if (text(row, 'tz')) when.tz = text(row, 'tz');
    if (Object.keys(when).length > 0) r.when = when;
    if (!value(row, 'encrypt').checked) r.encrypt = false;
    return r;
  });
  const tests = [...$('tests').tBodies[0].rows].map((row) => {
    const t = { src: text(row, 'src'), dst: text(row, 'dst'), expect: value(row, 'expect').value };
    if (text(row, 'proto')) t.proto = numberOr(text(row, 'proto'));
    if (text(row, 'port')) t.port = numberOr(text(row, 'port'));
    return t;
  });
  const levels = {};
  for (const row of $('levels').tBodies[0].rows) levels[row.dataset.vm] = text(row, 'level') === '' ? null : numberOr(text(row, 'level'));
  return { groups, rules, tests, levels };
}

/** Show an error where it belongs: tenants.T.rules[2].ports[0] at row 2's ports field. */
function showError(path, message) {
  const rel = path.replace(/^tenants\.[^.]+\./, '');
  const lv = /^vms\.([^.]+)\.level/.exec(rel);
  if (lv) {
    const row = [...$('levels').tBodies[0].rows].find((r) => r.dataset.vm === lv[1]);
    if (row) {
      value(row, 'level').classList.add('bad');
      value(row, 'level').parentElement.append(el('span', { className: 'err' }, message));
      return;
    }
  }
  const m = /^(groups|rules|tests)(?:\[(\d+)\]|\.([^.[]+))?(?:\.(\w+))?/.exec(rel);
  let shown = false;
  if (m) {
    const rows = $(m[1]).tBodies[0].rows;
    const row = m[2] !== undefined ? rows[Number(m[2])] : m[3] !== undefined ? [...rows].find((r) => text(r, 'name') === m[3]) : undefined;
    const field = m[4] === 'when' ? 'days' : m[4] || (m[1] === 'groups' ? 'members' : undefined);
    const target = row && field && value(row, field);
    if (target) {
      target.classList.add('bad');
      target.parentElement.append(el('span', { className: 'err' }, message));
      shown = true;
    }
  }
  if (!shown) (document.querySelector(`.err[data-path="${m ? m[1] : 'rules'}"]`) || $('status')).textContent = message;
}

function clearErrors() {
  for (const e of document.querySelectorAll('main .bad')) e.classList.remove('bad');
  for (const e of document.querySelectorAll('main td .err')) e.remove();
  for (const e of document.querySelectorAll('main .err[data-path]')) e.textContent = '';
}

function showResults(check) {
  const rows = $('tests').tBodies[0].rows;
  for (const row of rows) row.querySelector('.result').textContent = '';
  for (const r of check.results) {
    const td = rows[r.index] && rows[r.index].querySelector('.result');
    if (!td) continue;
    td.className = `result ${r.passed ? 'pass' : 'fail'}`;
    td.textContent = r.passed ? `pass (${r.rule})` : `FAIL: got ${r.got} (${r.rule})`;
  }
  for (const e of check.errors) showError(e.path, e.message);
  const failed = check.results.filter((r) => !r.passed).length;
  $('status').textContent = check.errors.length > 0 ? 'the policy does not compile'
    : `${check.results.length - failed} passed, ${failed} failed${check.othersFailing ? `; ${check.othersFailing} tests of other tenants would fail` : ''}`;
}

async function check() {
  clearErrors();
  try {
    const c = await api('POST', `/api/tenants/${encodeURIComponent(state.tenant)}/policy/check`, draft());
    showResults(c);
    return c;
  } catch (e) {
    $('status').textContent = e.message;
    return undefined;
  }
}

async function publish() {
  clearErrors();
  try {
    const r = await api('PUT', `/api/tenants/${encodeURIComponent(state.tenant)}/policy`, { ...draft(), revision: state.revision });
    state.revision = r.revision;
    $('status').textContent = r.unchanged ? `nothing changed (revision ${r.revision})` : `published as revision ${r.revision}`;
  } catch (e) {
    if (e.data && e.data.check) showResults(e.data.check);
    $('status').textContent = `not published: ${e.message}`;
  }
}

async function whatIf() {
  const body = { ...draft(), src: $('wi-src').value, dst: $('wi-dst').value };
  if ($('wi-proto').value) body.proto = $('wi-proto').value;
  if ($('wi-port').value.trim()) body.port = Number($('wi-port').value.trim());
  try {
    const r = await api('POST', `/api/tenants/${encodeURIComponent(state.tenant)}/policy/what-if`, body);
    fill($('wi-steps'), r.steps.map((s) => el('li', { className: s.result === 'fail' ? 'fail' : s.result === 'ok' ? 'pass' : '' }, `${s.stage}: ${s.text}`)));
    $('wi-result').textContent = `${r.src} -> ${r.dst}: ${r.got} (${r.rule}${r.got === 'unplug' ? `, ${r.reason}` : ''})`;
  } catch (e) {
    $('wi-result').textContent = e.message;
  }
}

async function download(ev) {
  ev.preventDefault();
  const yaml = await api('GET', `/api/tenants/${encodeURIComponent(state.tenant)}/policy.yaml`);
  const a = el('a', { href: URL.createObjectURL(new Blob([yaml], { type: 'application/yaml' })), download: `${state.tenant}-policy.yaml` });
  a.click();
}

$('enter').onclick = () => {
  state.token = $('token').value.trim();
  void login();
};
$('token').onkeydown = (e) => e.key === 'Enter' && $('enter').onclick();
$('logout').onclick = () => {
  sessionStorage.removeItem('nvi-token');
  location.reload();
};
$('tenant').onchange = () => void openTenant($('tenant').value);
$('add-group').onclick = () => $('groups').tBodies[0].append(groupRow('', []));
$('add-rule').onclick = () => $('rules').tBodies[0].append(ruleRow({ action: 'plug' }));
$('add-test').onclick = () => $('tests').tBodies[0].append(testRow({ expect: 'plug' }));
$('check').onclick = () => void check();
$('publish').onclick = () => void publish();
$('what-if').onclick = () => void whatIf();
$('download').onclick = (e) => void download(e);
if (state.token) void login();
