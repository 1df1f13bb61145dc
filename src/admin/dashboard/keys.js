// modelgate admin dashboard: the API keys and usage cards, over /admin/api/v1/keys and
// /admin/api/v1/usage. A new key's secret is shown once, in the page only; nothing else the
// server sends is rendered as HTML. Shown to the master key only (a manager key gets 403 and
// the cards stay hidden).
'use strict';

(function () {
  const API = '/admin/api/v1';
  const KEY_SLOT = 'modelgate.masterKey';
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (sel) => document.querySelector(sel);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  async function call(method, path, body) {
    const headers = { Accept: 'application/json' };
    const key = sessionStorage.getItem(KEY_SLOT) || '';
    if (key) headers.Authorization = 'Bearer ' + key;
    const opts = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const err = new Error((data && data.error && data.error.message) || ('HTTP ' + res.status));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  // ---- keys ----

  function limitsText(limits) {
    return (limits || []).map((l) => {
      const parts = [];
      if (l.rpm) parts.push(l.rpm + ' rpm');
      if (l.tpm) parts.push(l.tpm + ' tpm');
      if (l.max_concurrent) parts.push(l.max_concurrent + ' at once');
      if (l.budget) parts.push('$' + l.budget.usd + ' / ' + l.budget.period);
      return parts.join(', ');
    }).join('; ') || '-';
  }

  function renderKeys(keys) {
    const body = $('#key-table tbody');
    body.replaceChildren();
    for (const k of keys) {
      const tr = el('tr');
      tr.append(el('td', k.name, 'source'), el('td', k.user_path, 'mono'),
        el('td', (k.scopes || []).join(', ')), el('td', k.expires_at || 'never'),
        el('td', limitsText(k.limits)), el('td', k.created_at));
      const actions = el('td', null, 'actions');
      const revoke = el('button', 'Revoke', 'btn small danger');
      revoke.type = 'button';
      revoke.addEventListener('click', async () => {
        if (!window.confirm('Revoke ' + k.name + '? Requests with it are refused at once.')) return;
        try {
          await call('DELETE', API + '/keys/' + encodeURIComponent(k.name));
          await loadKeys();
        } catch (e) { window.alert(e.message); }
      });
      actions.append(revoke);
      tr.append(actions);
      body.append(tr);
    }
    $('#key-empty').hidden = keys.length > 0;
  }

  async function loadKeys() {
    const data = await call('GET', API + '/keys');
    $('#keys-card').hidden = location.hash.startsWith('#playground');
    renderKeys(data.data || []);
  }

  $('#new-key').addEventListener('click', () => {
    $('#key-form').hidden = false;
    $('#key-secret').hidden = true;
    $('#key-form').elements.name.focus();
  });
  $('#key-cancel').addEventListener('click', () => { $('#key-form').hidden = true; });

  $('#key-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const body = {
      name: f.name.value.trim(),
      scopes: f.scopes.value.split(',').map((s) => s.trim()).filter(Boolean),
    };
    if (f.user_path.value.trim()) body.user_path = f.user_path.value.trim();
    if (f.expires_at.value.trim()) body.expires_at = f.expires_at.value.trim();
    const limit = {};
    if (f.rpm.value) limit.rpm = Number(f.rpm.value);
    if (f.budget.value) limit.budget = { usd: Number(f.budget.value), period: 'day' };
    if (Object.keys(limit).length) body.limits = [limit];
    const err = $('#key-error');
    try {
      const created = await call('POST', API + '/keys', body);
      err.hidden = true;
      ev.target.reset();
      ev.target.hidden = true;
      const secret = $('#key-secret');
      secret.replaceChildren(el('strong', 'Key ' + created.name + ' created. Copy it now: it is not shown again. '),
        el('code', created.key));
      secret.hidden = false;
      await loadKeys();
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  });

  // ---- usage ----

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Bars: tokens per hour; line: cost per hour; both scaled to their own maximum.
  function drawChart(rows, from, to) {
    const chart = $('#usage-chart');
    chart.replaceChildren();
    const W = 720, H = 200, L = 8, R = 8, T = 10, B = 24;
    const hours = Math.max(1, Math.ceil((to - from) / 3600));
    const byHour = new Map();
    for (const r of rows) {
      const h = Math.floor(Date.parse(r.hour) / 1000 / 3600) * 3600;
      const cur = byHour.get(h) || { tokens: 0, cost: 0 };
      cur.tokens += r.total_tokens;
      cur.cost += r.cost_usd;
      byHour.set(h, cur);
    }
    const maxT = Math.max(1, ...Array.from(byHour.values(), (v) => v.tokens));
    const maxC = Math.max(1e-9, ...Array.from(byHour.values(), (v) => v.cost));
    const x = (h) => L + ((h - from) / 3600 / hours) * (W - L - R);
    const bw = Math.max(1, (W - L - R) / hours - 1);
    chart.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
    const points = [];
    const first = Math.floor(from / 3600) * 3600;
    for (let h = first; h < to; h += 3600) {
      const v = byHour.get(h) || { tokens: 0, cost: 0 };
      const bh = (v.tokens / maxT) * (H - T - B);
      if (bh > 0) chart.append(svg('rect', { class: 'bar', x: x(h), y: H - B - bh, width: bw, height: bh }));
      points.push(x(h) + bw / 2 + ',' + (H - B - (v.cost / maxC) * (H - T - B)));
    }
    chart.append(svg('polyline', { class: 'line', points: points.join(' ') }));
    chart.append(svg('text', { class: 'label', x: L, y: H - 6 }, new Date(from * 1000).toISOString().slice(0, 13) + ':00Z'));
    chart.append(svg('text', { class: 'label', x: W - R, y: H - 6, 'text-anchor': 'end' }, 'now'));
    chart.append(svg('text', { class: 'label', x: W - R, y: T + 10, 'text-anchor': 'end' },
      'max ' + maxT + ' tokens, $' + maxC.toFixed(4) + ' per hour'));
  }

  async function loadUsage() {
    const group = $('#usage-group').value;
    const span = Number($('#usage-range').value);
    const to = Math.floor(Date.now() / 1000) + 1;
    const from = to - span;
    const data = await call('GET', API + '/usage?group_by=' + group + '&from=' + from + '&to=' + to);
    $('#usage-card').hidden = location.hash.startsWith('#playground');
    $('#usage-group-head').textContent = $('#usage-group').selectedOptions[0].textContent.replace('By ', '');
    drawChart(data.data || [], from, to);
    const body = $('#usage-table tbody');
    body.replaceChildren();
    for (const t of data.totals || []) {
      const tr = el('tr');
      tr.append(el('td', t[group] || '(none)', 'source'), el('td', t.requests, 'right'),
        el('td', t.total_tokens, 'right'), el('td', t.cost_usd.toFixed(4), 'right'));
      body.append(tr);
    }
    $('#usage-empty').hidden = (data.totals || []).length > 0;
  }

  $('#usage-group').addEventListener('change', () => loadUsage().catch(() => {}));
  $('#usage-range').addEventListener('change', () => loadUsage().catch(() => {}));

  // Shown once the dashboard has signed in and loaded (app.js says so), never before: a
  // gateway that wants a key would refuse these calls.
  function load() {
    loadKeys().catch(() => { $('#keys-card').hidden = true; });
    loadUsage().catch(() => { $('#usage-card').hidden = true; });
  }
  document.addEventListener('modelgate:ready', load);
})();
