// The dashboard page: renders a site's slots, traffic split, activity log
// and live rates from the admin API, and drives the traffic editor, deploy
// form and swap dialog. Plain DOM, text only (never innerHTML with data).

import { token, call, path, PATHS, AuthError, checkTraffic, hostUrl } from './api.js';

const POLL_MS = 2000;
const FOLLOW_MS = 300;
const ACTIVITY_SHOWN = 25;
const FAILED = new Set(['failed', 'interrupted']);

const PHASES = {
  apply_settings: "Apply the target's settings to the source",
  wait_restart: 'Wait until the source answers again',
  warmup: 'Warm up the source',
  switch: 'Switch',
  apply_source_settings: "Apply the source's sticky settings to what it now runs",
  restore_settings: "Put the source's own settings back",
  recover_settings: 'Recover settings after an interruption',
};

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** Build an element: props are attributes (`text` sets its text, `on` its listeners). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = v;
    else if (k === 'on') for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c);
  }
  return el;
}

const page = {
  sites: [],
  site: null,
  view: null,
  listeners: null,
  activity: [],
  editorDirty: false,
  editorSlots: '',
  needLogin: false,
};

// ---- status line and errors -------------------------------------------------

function say(text) {
  $('#status').textContent = text;
}

/** A failed call: a refused token asks for it again; anything else is said. */
function fail(err) {
  if (err instanceof AuthError) {
    const had = token.get();
    token.clear();
    // the API's own words (an Authorization header) mean nothing here
    showLogin(had
      ? 'The proxy refused the token this tab had: it was changed, or you signed out in another tab. Type the admin token again.'
      : '');
    return;
  }
  say(err.message);
}

// ---- dialogs -----------------------------------------------------------------

/** Open a modal dialog; when it closes, focus goes back to what opened it
 * (or to its re-rendered twin, found by `data-key`). */
function openDialog(dialog, opener) {
  dialog.opener_ = opener ?? document.activeElement;
  dialog.openerKey_ = dialog.opener_?.dataset?.key;
  if (!dialog.open) dialog.showModal();
}

for (const dialog of $$('dialog')) {
  dialog.addEventListener('close', () => {
    let back = dialog.opener_;
    if (!back || !document.contains(back)) {
      back = dialog.openerKey_ ? $(`[data-key="${CSS.escape(dialog.openerKey_)}"]`) : null;
    }
    back?.focus();
  });
  for (const b of $$('[data-close]', dialog)) b.addEventListener('click', () => dialog.close());
}

// ---- sign in -----------------------------------------------------------------

function showLogin(message) {
  page.needLogin = true;
  $('#sign-in').hidden = false;
  $('#sign-out').hidden = true;
  $('#login-error').textContent = message ?? '';
  const d = $('#login');
  openDialog(d, $('#sign-in'));
  $('#login-token').focus();
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const value = $('#login-token').value.trim();
  if (!value) {
    $('#login-error').textContent = 'Type the admin token.';
    return;
  }
  token.set(value);
  try {
    await call('GET', PATHS.sites);
  } catch (err) {
    token.clear();
    $('#login-error').textContent =
      err instanceof AuthError
        ? 'The proxy refused this token: it is not the admin token ([admin] token, token_file or SLOTPROXY_ADMIN_TOKEN in its config). Type it again.'
        : err.message;
    $('#login-token').select();
    return;
  }
  page.needLogin = false;
  $('#login-token').value = '';
  $('#login').close();
  $('#sign-in').hidden = true;
  $('#sign-out').hidden = false;
  say('Signed in.');
  await refresh().catch(fail);
});

$('#sign-in').addEventListener('click', () => showLogin(''));
$('#sign-out').addEventListener('click', () => {
  token.clear();
  page.view = null;
  $('#site').hidden = true;
  say('Signed out: the token is forgotten.');
  showLogin('');
});

// ---- loading -------------------------------------------------------------------

async function refresh() {
  if (page.needLogin) return;
  if (!page.listeners) page.listeners = await call('GET', PATHS.listeners);
  const { sites } = await call('GET', PATHS.sites);
  page.sites = sites;
  renderSiteSelect();
  if (!page.site) {
    $('#site').hidden = true;
    say(sites.length ? '' : 'No sites are configured.');
    return;
  }
  const [view, live, activity] = await Promise.all([
    call('GET', path(PATHS.site, page.site)),
    call('GET', path(PATHS.live, page.site)),
    call('GET', path(PATHS.activity, page.site)),
  ]);
  const shadows = await Promise.all(
    view.slots
      .filter((s) => s.shadow)
      .map((s) => call('GET', path(PATHS.shadow, page.site, s.name)).catch(() => null)),
  );
  page.view = view;
  page.activity = activity;
  $('#sign-in').hidden = true;
  $('#sign-out').hidden = !token.get();
  renderSite(view);
  renderLive(live);
  renderShadows(view, shadows.filter(Boolean));
  renderActivity(activity);
}

// ---- shadow traffic ------------------------------------------------------------

/** Each slot's shadow with this node's figures and last differences, or a
 * form to start one; re-drawn only when something changed (and never while
 * a start form is being typed in). */
function renderShadows(view, shadows) {
  const box = $('#shadows');
  const sig = JSON.stringify([view.slots.map((s) => [s.name, s.shadow]), shadows]);
  const typing = document.activeElement?.tagName === 'INPUT' && box.contains(document.activeElement);
  if (box.dataset.sig === sig || typing) return;
  box.dataset.sig = sig;
  const bySlot = Object.fromEntries(shadows.map((s) => [s.slot, s]));
  box.replaceChildren(
    ...view.slots
      .filter((s) => s.name !== 'production')
      .map((s) => (bySlot[s.name] ? shadowPanel(bySlot[s.name]) : shadowStart(s.name))),
  );
}

function shadowPanel(v) {
  const f = v.figures;
  const pct = (r) => (r === null || r === undefined ? '—' : `${(r * 100).toFixed(1)}%`);
  const figures = `${pct(f.match_ratio)} matching (${f.match} of ${f.compared} compared) · status differs ${f.status_differs} · headers differ ${f.headers_differ} · body differs ${f.body_differs} · error ${f.error} · dropped ${f.dropped}`
    + (f.latency_ratio_mean ? ` · slot/production time ${f.latency_ratio_mean.toFixed(2)}x` : '');
  const last = v.last_differences;
  return h(
    'div',
    { class: 'shadow', 'data-slot': v.slot },
    h('h4', { text: `${v.slot}: ${v.shadow.percent}% of production's ${v.shadow.methods.join(', ')}` }),
    h('p', { class: 'shadow-figures', text: figures }),
    last.length
      ? h(
          'table',
          { class: 'differences' },
          h('caption', { class: 'visually-hidden', text: `Last differing answers of ${v.slot}` }),
          h(
            'thead',
            {},
            h('tr', {}, ['Request', 'Result', 'Status (production / slot)', 'First difference'].map((t) => h('th', { scope: 'col', text: t }))),
          ),
          h(
            'tbody',
            {},
            last.map((d) =>
              h(
                'tr',
                {},
                h('td', {}, h('code', { text: `${d.method} ${d.path}` })),
                h('td', { text: d.result }),
                h('td', { text: `${d.production_status} / ${d.slot_status ?? '—'}` }),
                h('td', { text: d.first_difference }),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted', text: 'No differences yet.' }),
    h('button', {
      type: 'button',
      'data-key': `shadow-stop:${v.slot}`,
      'aria-label': `Stop the shadow of ${v.slot}`,
      text: 'Stop shadow',
      on: {
        click: async () => {
          try {
            await call('DELETE', path(PATHS.shadow, page.site, v.slot));
            say(`The shadow of ${v.slot} is stopped.`);
            await refresh();
          } catch (e) {
            fail(e);
          }
        },
      },
    }),
  );
}

function shadowStart(slot) {
  const id = `shadow-percent-${slot}`;
  const input = h('input', { id, type: 'number', min: '0', max: '100', step: 'any', value: '10' });
  return h(
    'div',
    { class: 'shadow', 'data-slot': slot },
    h(
      'form',
      {
        on: {
          submit: async (ev) => {
            ev.preventDefault();
            const percent = Number(input.value);
            try {
              await call('PUT', path(PATHS.shadow, page.site, slot), { percent });
              input.blur();
              say(`${slot} now gets a copy of ${percent}% of production's requests.`);
              await refresh();
            } catch (e) {
              fail(e);
            }
          },
        },
      },
      h('label', { for: id, text: `Copy to ${slot}` }),
      input,
      h('span', { text: "% of production's GET, HEAD and OPTIONS requests" }),
      h('button', { type: 'submit', 'data-key': `shadow-start:${slot}`, text: 'Start shadow' }),
    ),
  );
}

function renderSiteSelect() {
  const select = $('#site-select');
  const names = page.sites.map((s) => s.name);
  const wanted = decodeURIComponent(location.hash.replace(/^#site=/, ''));
  if (!names.includes(page.site)) page.site = names.includes(wanted) ? wanted : names[0] ?? null;
  if (select.dataset.names !== names.join('\n')) {
    select.replaceChildren(...names.map((n) => h('option', { value: n, text: n })));
    select.dataset.names = names.join('\n');
  }
  select.value = page.site ?? '';
}

$('#site-select').addEventListener('change', (ev) => {
  page.site = ev.target.value;
  history.replaceState(null, '', `#site=${encodeURIComponent(page.site)}`);
  page.editorDirty = false;
  page.editorSlots = '';
  $('#slots tbody').replaceChildren();
  $('#activity').replaceChildren();
  refresh().catch(fail);
});

// ---- the site and its slots ----------------------------------------------------

function hostLinks(hosts) {
  return hosts.map((host) =>
    h('a', { href: hostUrl(host, page.listeners), target: '_blank', rel: 'noopener', text: host }),
  );
}

/** One match entry as the CLI's `slot match list` shows it. */
function describeMatch(m) {
  const conds = m.all?.length ? m.all : [m];
  return conds
    .map((c) => {
      const what = c.header ? `header ${c.header}` : `cookie ${c.cookie}`;
      return c.regex !== undefined ? `${what} ~ /${c.regex}/` : `${what} = "${c.value}"`;
    })
    .join(' and ');
}

function joined(nodes, sep = ', ') {
  return nodes.flatMap((n, i) => (i ? [sep, n] : [n]));
}

function renderSite(view) {
  $('#site').hidden = false;
  $('#site-title').textContent = view.name;
  $('#site-hosts').replaceChildren(...joined(hostLinks(view.hostnames)));
  renderSlots(view);
  renderSplit(view);
  renderEditor(view);
}

/** Slots in the order shown, each with a colour index. */
function colour(view, slot) {
  return view.slots.findIndex((s) => s.name === slot) % 6;
}

function trafficText(view, slot) {
  if (slot.name === 'production') return `${fmtPct(view.routing.production_percent)} (the rest)`;
  if (slot.traffic_percent === null) return 'no rule';
  if (slot.traffic_percent === 0) return '0% (opt-in link only)';
  return fmtPct(slot.traffic_percent);
}

function share(view, slot) {
  return slot.name === 'production' ? view.routing.production_percent : slot.traffic_percent ?? 0;
}

function renderSlots(view) {
  const tbody = $('#slots tbody');
  const focused = document.activeElement?.dataset?.key;
  const keep = new Set();
  let previous = null;
  for (const slot of view.slots) {
    keep.add(slot.name);
    const sig = JSON.stringify([slot, view.routing, page.listeners]);
    let row = $$('tr', tbody).find((r) => r.dataset.slot === slot.name);
    if (!row || row.dataset.sig !== sig) {
      const fresh = slotRow(view, slot);
      fresh.dataset.sig = sig;
      if (row) {
        // keep the live figures until the next poll fills them
        for (const cls of ['live-rps', 'live-5xx']) {
          $(`.${cls}`, fresh).textContent = $(`.${cls}`, row).textContent;
        }
        row.replaceWith(fresh);
      } else if (previous) previous.after(fresh);
      else tbody.prepend(fresh);
      row = fresh;
    }
    previous = row;
  }
  for (const r of $$('tr', tbody)) if (!keep.has(r.dataset.slot)) r.remove();
  if (focused && document.activeElement === document.body) {
    $(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }
}

function slotRow(view, slot) {
  const d = slot.deployment;
  const pct = share(view, slot);
  const meter = h('span', { class: `meter c${colour(view, slot.name)}` });
  meter.style.width = `${pct}%`;
  const actions = [];
  if (slot.name !== 'production' && d) {
    actions.push(
      h('button', {
        type: 'button',
        class: 'primary',
        'data-key': `swap:${slot.name}`,
        'data-action': 'swap',
        'data-slot': slot.name,
        'aria-label': `Swap ${slot.name}`,
        text: 'Swap…',
        on: { click: (ev) => openSwap(slot.name, ev.currentTarget) },
      }),
    );
  }
  actions.push(
    h('button', {
      type: 'button',
      'data-key': `deploy:${slot.name}`,
      'data-action': 'deploy',
      'data-slot': slot.name,
      'aria-label': `Deploy to ${slot.name}`,
      text: 'Deploy…',
      on: { click: (ev) => openDeploy(slot.name, ev.currentTarget) },
    }),
  );
  return h(
    'tr',
    { 'data-slot': slot.name },
    h(
      'th',
      { scope: 'row', 'data-label': 'Slot' },
      h('span', { class: `swatch c${colour(view, slot.name)}`, 'aria-hidden': 'true' }),
      h('span', { class: 'slot-name', text: slot.name }),
      slot.auto_swap_target
        ? h('span', { class: 'note', text: ` auto swap → ${slot.auto_swap_target}` })
        : null,
      h('div', { class: 'hosts' }, joined(hostLinks(slot.hostnames), ' ')),
      slot.match?.length
        ? h(
            'ul',
            { class: 'matches', 'aria-label': `Requests sent to ${slot.name} by match` },
            slot.match.map((m) => h('li', { text: `match: ${describeMatch(m)}` })),
          )
        : null,
      slot.outlier
        ? h('div', {
            class: 'note outlier',
            text: `outlier ejection: ${slot.outlier.consecutive_5xx} 5xx or ${slot.outlier.consecutive_connect_errors} connect errors in a row, ${slot.outlier.base_ejection_secs} s, at most ${slot.outlier.max_ejection_percent}% out`,
          })
        : null,
    ),
    h(
      'td',
      { 'data-label': 'Build', class: 'build' },
      d ? h('code', { text: d.build_version }) : h('span', { class: 'muted', text: 'no deployment (503)' }),
    ),
    h(
      'td',
      { 'data-label': 'Instances' },
      d
        ? h(
            'ul',
            { class: 'instances' },
            d.instances.map((i) =>
              h(
                'li',
                {},
                h('code', { text: i.address }),
                ' ',
                h('span', { class: `badge ${i.health}`, text: i.health }),
              ),
            ),
          )
        : '—',
    ),
    h(
      'td',
      { 'data-label': 'Traffic', class: 'traffic' },
      h('span', { class: 'pct', text: trafficText(view, slot) }),
      h('span', { class: 'track', 'aria-hidden': 'true' }, meter),
    ),
    h('td', { 'data-label': 'Req/s', class: 'num live-rps', text: '—' }),
    h('td', { 'data-label': '5xx/s', class: 'num live-5xx', text: '—' }),
    h('td', { class: 'actions' }, actions),
  );
}

function renderLive(live) {
  for (const s of live.slots) {
    const row = $$('#slots tbody tr').find((r) => r.dataset.slot === s.slot);
    if (!row) continue;
    $('.live-rps', row).textContent = fmtRate(s.requests_per_sec);
    const errs = $('.live-5xx', row);
    errs.textContent = fmtRate(s.errors_5xx_per_sec);
    errs.classList.toggle('bad', (s.errors_5xx_per_sec ?? 0) > 0);
  }
  $('#live-note').textContent =
    live.window_secs === null
      ? 'Live rates appear with the next update.'
      : `Live rates over the last ${Math.round(live.window_secs)} s, from the proxy's own counters.`;
}

// ---- traffic split and editor -----------------------------------------------

function renderSplit(view) {
  const parts = view.slots
    .map((s) => ({ name: s.name, pct: share(view, s), rule: s.name === 'production' || s.traffic_percent !== null }))
    .filter((p) => p.rule);
  const bar = $('#split');
  bar.replaceChildren(
    ...parts
      .filter((p) => p.pct > 0)
      .map((p) => {
        const seg = h('span', { class: `seg c${colour(view, p.name)}`, title: `${p.name} ${fmtPct(p.pct)}` });
        seg.style.width = `${p.pct}%`;
        if (p.pct >= 12) seg.textContent = `${p.name} ${fmtPct(p.pct)}`;
        return seg;
      }),
  );
  bar.setAttribute('aria-label', `Traffic split: ${parts.map((p) => `${p.name} ${fmtPct(p.pct)}`).join(', ')}`);
  $('#split-legend').replaceChildren(
    ...view.slots.map((s) =>
      h(
        'li',
        {},
        h('span', { class: `swatch c${colour(view, s.name)}`, 'aria-hidden': 'true' }),
        `${s.name}: ${trafficText(view, s)}`,
      ),
    ),
  );
}

function editorFields() {
  return $$('#traffic-inputs input').map((i) => [i.dataset.slot, i.value]);
}

function renderEditor(view) {
  const others = view.slots.filter((s) => s.name !== 'production');
  const names = others.map((s) => s.name).join('\n');
  if (page.editorDirty && names === page.editorSlots) return;
  const typed = Object.fromEntries(page.editorDirty ? editorFields() : []);
  page.editorSlots = names;
  $('#traffic-inputs').replaceChildren(
    ...others.map((s) => {
      const id = `traffic-${s.name}`;
      const value = s.name in typed ? typed[s.name] : s.traffic_percent === null ? '' : String(s.traffic_percent);
      return h(
        'div',
        { class: 'traffic-input' },
        h('label', { for: id, text: `${s.name} %` }),
        h('input', {
          id,
          'data-slot': s.name,
          'data-key': id,
          type: 'text',
          inputmode: 'decimal',
          autocomplete: 'off',
          placeholder: 'no rule',
          'aria-describedby': 'traffic-error',
          value,
          on: { input: onTrafficInput },
        }),
      );
    }),
  );
  if (!others.length) $('#traffic-inputs').textContent = 'This site has only its production slot.';
  showTrafficCheck(checkTraffic(editorFields()), false);
}

function showTrafficCheck(check, withErrors) {
  $('#traffic-production').textContent = fmtPct(check.production);
  for (const i of $$('#traffic-inputs input')) {
    i.setAttribute('aria-invalid', String(check.invalid.includes(i.dataset.slot)));
  }
  $('#traffic-error').textContent = withErrors ? check.errors.join('; ') : '';
}

function onTrafficInput() {
  page.editorDirty = true;
  showTrafficCheck(checkTraffic(editorFields()), true);
}

$('#traffic-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const check = checkTraffic(editorFields());
  showTrafficCheck(check, true);
  if (check.errors.length) {
    $(`#traffic-${CSS.escape(check.invalid[0])}`)?.focus();
    return;
  }
  const button = $('#traffic-save');
  button.disabled = true;
  try {
    const answer = await call('PUT', path(PATHS.traffic, page.site), { distribution: check.distribution });
    page.editorDirty = false;
    const parts = Object.entries(answer.distribution).map(([s, p]) => `${s} ${fmtPct(p)}`);
    say(`Traffic saved: ${[...parts, `production ${fmtPct(answer.production_percent)}`].join(', ')}.`);
    await refresh();
  } catch (err) {
    if (err instanceof AuthError) fail(err);
    else $('#traffic-error').textContent = `Refused: ${err.message}`;
  } finally {
    button.disabled = false;
  }
});

$('#traffic-reset').addEventListener('click', () => {
  page.editorDirty = false;
  if (page.view) renderEditor(page.view);
});

$('#traffic-clear').addEventListener('click', async () => {
  if (!confirm(`Remove every traffic rule of ${page.site}? All production-host traffic goes to production.`)) return;
  try {
    await call('DELETE', path(PATHS.traffic, page.site));
    page.editorDirty = false;
    say('Every rule cleared: production gets all traffic.');
    await refresh();
  } catch (err) {
    fail(err);
  }
});

// ---- activity log --------------------------------------------------------------

function renderActivity(ops) {
  const list = $('#activity');
  const open = new Set($$('details[open]', list).map((d) => d.closest('li').dataset.op));
  const shown = ops.slice(0, ACTIVITY_SHOWN);
  const sig = JSON.stringify(shown);
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  if (!shown.length) {
    list.replaceChildren(h('li', { class: 'muted', text: 'No swaps yet.' }));
    return;
  }
  list.replaceChildren(...shown.map((op) => activityItem(op, open.has(op.id))));
}

function activityItem(op, open) {
  return h(
    'li',
    { 'data-op': op.id, 'data-status': op.status },
    h(
      'details',
      { open },
      h(
        'summary',
        {},
        h('time', { datetime: op.started_at, text: fmtTime(op.started_at) }),
        ' ',
        h('strong', { text: op.action }),
        ` ${op.source} → ${op.target} `,
        h('span', { class: `badge ${op.status}`, text: op.status }),
        op.error
          ? h('span', { class: FAILED.has(op.status) ? 'error-inline' : 'note', text: ` ${op.error}` })
          : null,
      ),
      phaseList(op),
      op.instances.length
        ? h(
            'table',
            { class: 'instances-table' },
            h('caption', { text: 'Per-instance results' }),
            h(
              'thead',
              {},
              h('tr', {}, ['Instance', 'Phase', 'Attempts', 'Status', 'Error'].map((t) => h('th', { scope: 'col', text: t }))),
            ),
            h(
              'tbody',
              {},
              op.instances.map((i) =>
                h(
                  'tr',
                  {},
                  h('td', {}, h('code', { text: i.instance })),
                  h('td', { text: i.phase }),
                  h('td', { text: String(i.attempts) }),
                  h('td', { text: i.status ?? '—' }),
                  h('td', { text: i.error ?? '' }),
                ),
              ),
            ),
          )
        : null,
      h('p', { class: 'muted', text: `Operation ${op.id}` }),
    ),
  );
}

function phaseList(op) {
  return h(
    'ol',
    { class: 'phases' },
    op.phases.map((p) =>
      h(
        'li',
        { 'data-phase': p.name, 'data-result': p.result },
        h('span', { class: `badge ${p.result}`, text: p.result }),
        ' ',
        h('span', { text: PHASES[p.name] ?? p.name }),
        ' ',
        h('code', { class: 'muted', text: p.name }),
        p.ended_at ? h('span', { class: 'muted', text: ` ${fmtMs(p.started_at, p.ended_at)}` }) : null,
        p.detail ? h('div', { class: 'detail', text: p.detail }) : null,
      ),
    ),
  );
}

// ---- swap dialog ---------------------------------------------------------------

const swap = { source: null, following: null };

function openSwap(source, opener) {
  const view = page.view;
  const slot = view.slots.find((s) => s.name === source);
  swap.source = source;
  $('#swap-title').textContent = `Swap ${source}`;
  $('#swap-source').textContent = source;
  const select = $('#swap-target');
  const targets = view.slots.filter((s) => s.name !== source).map((s) => s.name);
  select.replaceChildren(...targets.map((t) => h('option', { value: t, text: t })));
  select.value = slot.auto_swap_target && targets.includes(slot.auto_swap_target) ? slot.auto_swap_target : 'production';
  $('#swap-error').textContent = '';
  $('#swap-progress').hidden = true;
  openDialog($('#swap-dialog'), opener);
  // follow a swap of this slot that is still running
  const running = page.activity.find((op) => op.source === source && op.status === 'running');
  if (running) follow(running.id);
  loadPreview();
}

$('#swap-target').addEventListener('change', () => {
  $('#swap-progress').hidden = true;
  loadPreview();
});
$('#swap-preview-btn').addEventListener('click', () => loadPreview());

function setSwapButtons({ pending, ready }) {
  $('#swap-go').hidden = pending;
  $('#swap-start-preview').hidden = pending;
  $('#swap-complete').hidden = !pending;
  $('#swap-cancel').hidden = !pending;
  for (const id of ['#swap-go', '#swap-start-preview', '#swap-complete', '#swap-cancel']) {
    $(id).disabled = !ready;
  }
}

async function loadPreview() {
  const target = $('#swap-target').value;
  $('#swap-error').textContent = '';
  setSwapButtons({ pending: false, ready: false });
  let preview;
  try {
    preview = await call('GET', `${path(PATHS.swapPreview, page.site, swap.source)}?target_slot=${encodeURIComponent(target)}`);
  } catch (err) {
    $('#swap-preview').hidden = true;
    if (err instanceof AuthError) fail(err);
    else $('#swap-error').textContent = `This swap cannot start: ${err.message}`;
    return;
  }
  $('#swap-preview').hidden = false;
  const pending = preview.pending_preview !== null;
  const note = $('#swap-pending');
  note.hidden = !pending;
  note.textContent = pending
    ? `A preview is pending (${preview.pending_preview}): ${preview.source} already runs with ${preview.target}'s settings. Complete the swap or cancel the preview.`
    : '';
  $('#tab-source').textContent = `Source changes (${preview.source})`;
  $('#tab-target').textContent = `Target changes (${preview.target})`;
  $('#panel-source').replaceChildren(
    ...changesPanel(
      preview.source_changes,
      `During the swap, the instances of ${preview.source} get ${preview.target}'s sticky settings and keep running their build.`,
    ),
  );
  $('#panel-target').replaceChildren(
    ...changesPanel(
      preview.target_changes,
      `After the switch, ${preview.target} serves ${preview.source}'s build and swappable settings; its sticky settings stay.`,
    ),
  );
  setSwapButtons({ pending, ready: true });
}

function changesPanel(side, intro) {
  const build =
    side.build_version_before === side.build_version_after
      ? `Build stays ${side.build_version_before ?? '(none)'}.`
      : `Build ${side.build_version_before ?? '(none)'} → ${side.build_version_after ?? '(none)'}.`;
  const table = (rows, caption, withAfter) =>
    h(
      'table',
      { class: 'changes' },
      h('caption', { text: caption }),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col', text: 'Setting' }),
          h('th', { scope: 'col', text: withAfter ? 'Now' : 'Value' }),
          withAfter ? h('th', { scope: 'col', text: 'After the swap' }) : null,
        ),
      ),
      h(
        'tbody',
        {},
        rows.map((c) =>
          h(
            'tr',
            { 'data-key': c.key },
            h('th', { scope: 'row' }, h('code', { text: c.key }), c.sticky ? h('span', { class: 'note', text: ' sticky' }) : null),
            h('td', {}, c.before === null ? h('span', { class: 'muted', text: 'not set' }) : h('code', { text: c.before })),
            withAfter
              ? h('td', {}, c.after === null ? h('span', { class: 'muted', text: 'removed' }) : h('code', { text: c.after }))
              : null,
          ),
        ),
      ),
    );
  return [
    h('p', { text: intro }),
    h('p', { class: 'build-line', text: build }),
    side.changed.length
      ? table(side.changed, `Settings that change (${side.changed.length})`, true)
      : h('p', { class: 'muted', text: 'No setting changes.' }),
    side.unchanged.length
      ? table(side.unchanged, `Settings that stay (${side.unchanged.length})`, false)
      : h('p', { class: 'muted', text: 'No other settings.' }),
  ];
}

// tabs: arrows, Home and End move between them (WAI-ARIA tabs pattern)
const tabs = $$('[role="tab"]');
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute('aria-controls')}`).hidden = !on;
  }
  tab.focus();
}
for (const t of tabs) {
  t.addEventListener('click', () => selectTab(t));
  t.addEventListener('keydown', (ev) => {
    const i = tabs.indexOf(t);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length]);
  });
}

async function startSwap(action) {
  const target = $('#swap-target').value;
  setSwapButtons({ pending: !$('#swap-complete').hidden, ready: false });
  $('#swap-error').textContent = '';
  try {
    const { operation_id } = await call('POST', path(PATHS.swap, page.site, swap.source), {
      target_slot: target,
      action,
    });
    say(`${action} of ${swap.source} into ${target} started: ${operation_id}`);
    follow(operation_id);
  } catch (err) {
    if (err instanceof AuthError) fail(err);
    else $('#swap-error').textContent = `Refused: ${err.message}`;
    loadPreview();
  }
}

$('#swap-go').addEventListener('click', () => startSwap('swap'));
$('#swap-start-preview').addEventListener('click', () => startSwap('preview'));
$('#swap-complete').addEventListener('click', () => startSwap('swap'));
$('#swap-cancel').addEventListener('click', () => startSwap('reset'));

/** Show an operation's phases as they happen, until it ends or pauses. */
async function follow(id) {
  swap.following = id;
  $('#swap-progress').hidden = false;
  for (;;) {
    let op;
    try {
      op = await call('GET', path(PATHS.operation, id));
    } catch (err) {
      fail(err);
      return;
    }
    if (swap.following !== id) return;
    const status = $('#swap-status');
    status.textContent = op.status;
    status.className = `badge ${op.status}`;
    $('#swap-phases').replaceChildren(...phaseList(op).children);
    if (op.status !== 'running') {
      $('#swap-error').textContent = op.error ? `${op.status}: ${op.error}` : '';
      say(`${op.action} of ${op.source} into ${op.target}: ${op.status}${op.error ? ` (${op.error})` : ''}`);
      await refresh().catch(fail);
      if ($('#swap-dialog').open) await loadPreview();
      return;
    }
    await new Promise((r) => setTimeout(r, FOLLOW_MS));
  }
}

// ---- deploy dialog ---------------------------------------------------------------

const deploy = { slot: null };

function openDeploy(slotName, opener) {
  const slot = page.view.slots.find((s) => s.name === slotName);
  const d = slot.deployment;
  deploy.slot = slotName;
  $('#deploy-title').textContent = `Deploy to ${slotName}`;
  $('#deploy-build').value = d?.build_version ?? '';
  $('#deploy-instances').value = d ? d.instances.map((i) => i.address).join('\n') : '';
  $('#deploy-warmup-path').value = d?.warmup_path ?? '';
  $('#deploy-warmup-statuses').value = d ? d.warmup_statuses.join(', ') : '';
  $('#deploy-hook').value = d?.settings_hook_path ?? '';
  $('#deploy-error').textContent = '';
  openDialog($('#deploy-dialog'), opener);
  $('#deploy-build').focus();
}

$('#deploy-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const error = $('#deploy-error');
  const build = $('#deploy-build').value.trim();
  const instances = $('#deploy-instances').value.split(/[\s,]+/).filter(Boolean);
  const statuses = $('#deploy-warmup-statuses').value.split(/[\s,]+/).filter(Boolean);
  const problems = [];
  if (!build) problems.push('build version: required');
  if (!instances.length) problems.push('instances: at least one host:port');
  const codes = statuses.map(Number);
  if (codes.some((c) => !Number.isInteger(c) || c < 100 || c > 599)) {
    problems.push('warm-up statuses: HTTP status codes (100-599)');
  }
  if (problems.length) {
    error.textContent = problems.join('; ');
    return;
  }
  // keys the dialog does not edit stay as the slot's deployment has them
  // (a redeploy must not turn a gRPC slot back into HTTP/1, say)
  const current = page.view.slots.find((s) => s.name === deploy.slot)?.deployment;
  const body = { build_version: build, instances };
  if (current) {
    body.warmup_timeout_secs = current.warmup_timeout_secs;
    body.warmup_retries = current.warmup_retries;
    body.instances_protocol = current.instances_protocol;
    body.health_check = current.health_check;
    if (current.upstream_read_timeout_secs != null) {
      body.upstream_read_timeout_secs = current.upstream_read_timeout_secs;
    }
    if (current.instances_tls_ca != null) {
      body.instances_tls_ca = current.instances_tls_ca;
    }
  }
  const warmupPath = $('#deploy-warmup-path').value.trim();
  if (warmupPath) body.warmup_path = warmupPath;
  if (codes.length) body.warmup_statuses = codes;
  const hook = $('#deploy-hook').value.trim();
  if (hook) body.settings_hook_path = hook;
  try {
    const answer = await call('PUT', path(PATHS.deployment, page.site, deploy.slot), body);
    $('#deploy-dialog').close();
    const auto = answer.auto_swap;
    say(
      `Deployed ${build} to ${deploy.slot}.` +
        (auto?.operation_id ? ` Auto swap started: ${auto.operation_id}.` : '') +
        (auto?.error ? ` Auto swap did not start: ${auto.error}` : ''),
    );
    await refresh();
  } catch (err) {
    if (err instanceof AuthError) fail(err);
    else error.textContent = `Refused: ${err.message}`;
  }
});

// ---- formatting --------------------------------------------------------------------

function fmtPct(p) {
  return `${+Number(p).toFixed(2)}%`;
}

function fmtRate(r) {
  if (r === null || r === undefined) return '—';
  return r >= 10 ? String(Math.round(r)) : r.toFixed(1);
}

function fmtTime(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
}

function fmtMs(from, to) {
  const ms = new Date(to) - new Date(from);
  if (!Number.isFinite(ms)) return '';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// ---- start -------------------------------------------------------------------------

async function tick() {
  try {
    await refresh();
  } catch (err) {
    fail(err);
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

tick();
