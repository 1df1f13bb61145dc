// modelgate admin dashboard: plain JavaScript over the REST API (/admin/api/v1). Everything the
// server sends is rendered as text (never as HTML). The master key, when the gateway has one,
// lives in this tab's sessionStorage only.
'use strict';

(function () {
  const API = '/admin/api/v1';
  const KEY_SLOT = 'modelgate.masterKey';
  const state = { entries: [], models: [], status: null, editing: null, renaming: null, confirming: null };

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // Builds an element; children are nodes or strings (set as text).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  class ApiError extends Error {
    constructor(status, error) {
      super((error && error.message) || ('HTTP ' + status));
      this.status = status;
      this.code = error && error.code;
      this.param = error && error.param;
    }
  }

  function masterKey() {
    return sessionStorage.getItem(KEY_SLOT) || '';
  }

  async function api(method, path, body, headers) {
    const opts = { method, headers: Object.assign({ Accept: 'application/json' }, headers || {}) };
    const key = masterKey();
    if (key) opts.headers.Authorization = 'Bearer ' + key;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (res.status === 401) {
      showLogin(masterKey() ? 'That key was not accepted.' : '');
      throw new ApiError(401, data && data.error);
    }
    if (!res.ok) throw new ApiError(res.status, data && data.error);
    return { data, etag: res.headers.get('etag') };
  }

  const enc = (source) => encodeURIComponent(source);

  // ---- sign-in ----

  function showLogin(message) {
    $('#app').hidden = true;
    $('#login').hidden = false;
    const err = $('#login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('#login-key').focus();
  }

  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_SLOT, $('#login-key').value.trim());
    $('#login-key').value = '';
    await boot();
  });

  $('#sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_SLOT);
    $('#sign-out').hidden = true;
    showLogin('');
  });

  // ---- loading ----

  // The status line: the master key's; a manager key (403) goes without it.
  function loadStatus() {
    return api('GET', API + '/status').then((r) => r.data, (e) => {
      if (e.status === 403) return null;
      throw e;
    });
  }

  async function boot() {
    try {
      // One call first: on a gateway that wants a key, only it is refused before the sign-in.
      const status = await loadStatus();
      const [vms, models] = await Promise.all([
        api('GET', API + '/virtual-models'),
        api('GET', API + '/models'),
      ]);
      state.status = status;
      state.entries = vms.data.data || [];
      state.models = models.data.data || [];
      $('#login').hidden = true;
      $('#app').hidden = false;
      $('#sign-out').hidden = !masterKey();
      render();
      // The playground (playground.js) loads its model list with the key now accepted.
      document.dispatchEvent(new CustomEvent('modelgate:ready'));
    } catch (e) {
      if (e.status === 401) return;
      $('#app').hidden = false;
      showNotice(e.message);
    }
  }

  async function refresh() {
    const [status, vms, models] = await Promise.all([
      loadStatus(),
      api('GET', API + '/virtual-models'),
      api('GET', API + '/models'),
    ]);
    state.status = status;
    state.entries = vms.data.data || [];
    state.models = models.data.data || [];
    render();
  }

  function showNotice(message) {
    const n = $('#vm-notice');
    n.textContent = message || '';
    n.hidden = !message;
  }

  let toastTimer = null;
  function toast(message) {
    const t = $('#toast');
    t.textContent = message;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 2600);
  }

  // ---- rendering ----

  function accessState(entry) {
    if (entry.enabled === false) return 'disabled';
    const paths = entry.user_paths;
    // An empty list restricts nothing, exactly as an absent one.
    if (Array.isArray(paths) && paths.length > 0 && !paths.includes('/')) return 'restricted';
    return 'enabled';
  }

  function stateBadge(stateName, paths) {
    const label = stateName[0].toUpperCase() + stateName.slice(1);
    const badge = h('span', { class: 'badge state-' + stateName, text: label });
    if (stateName === 'restricted' && paths && paths.length) {
      return h('div', {}, badge, h('div', { class: 'sub mono', text: paths.join(', ') }));
    }
    return badge;
  }

  function originBadges(entry) {
    const badges = [];
    if (entry.origin === 'config') badges.push(h('span', { class: 'badge badge-config', title: entry.location, text: 'Config' }));
    else if (entry.origin === 'env') badges.push(h('span', { class: 'badge badge-env', title: entry.location, text: 'Env' }));
    else badges.push(h('span', { class: 'badge badge-store', text: 'Store' }));
    if (entry.overridden) badges.push(h('span', { class: 'badge badge-hidden', title: 'Hidden by ' + entry.overridden_by, text: 'Hidden' }));
    if (!entry.valid) badges.push(h('span', { class: 'badge badge-invalid', title: entry.error || 'No target can serve now', text: entry.kind === 'redirect' ? 'No target' : 'Invalid' }));
    return h('div', { class: 'badges' }, badges);
  }

  function targetsCell(entry) {
    if (entry.kind === 'policy') {
      return h('span', { class: 'badge badge-policy', text: 'Access policy' });
    }
    const list = entry.targets_status && entry.targets_status.length ? entry.targets_status : entryTargets(entry).map((t) => ({ name: t.model, weight: t.weight === undefined ? 1 : t.weight, available: false }));
    const multi = list.length > 1;
    return h('div', { class: 'targets' }, list.map((t) => h('div', { class: 'target' },
      h('span', { class: 'dot' + (t.available ? ' on' : ''), title: t.available ? 'available' : 'unavailable now' }),
      h('span', { class: 'mono', text: t.name }),
      multi ? h('span', { class: 'weight', text: t.weight === 0 ? 'fallback' : '×' + t.weight }) : null)));
  }

  function entryTargets(entry) {
    if (entry.target) return [normTarget(entry.target)];
    if (Array.isArray(entry.targets) && entry.targets.length) return entry.targets.map(normTarget);
    if (entry.routing_config && Array.isArray(entry.routing_config.load_balance_targets)) {
      return entry.routing_config.load_balance_targets.map(normTarget);
    }
    return [];
  }

  function normTarget(t) {
    if (typeof t === 'string') return { model: t };
    const copy = Object.assign({}, t);
    if (copy.provider && copy.model && !copy.model.startsWith(copy.provider + '/')) {
      copy.model = copy.provider + '/' + copy.model;
    }
    delete copy.provider;
    return copy;
  }

  // "config/prod.yaml: virtual_models[2]" without the directories (the title has it all).
  function shortLocation(location) {
    return String(location || '').replace(/^[^:]*\//, '');
  }

  function strategyName(entry) {
    if (entry.kind === 'policy') return '—';
    // TrueFoundry's routing_config.type names (weight-based-routing, ...) read as ours.
    const s = entry.strategy || (entry.routing_config && entry.routing_config.type) || 'round_robin';
    return normalizeStrategy(s).replace(/_/g, ' ');
  }

  function render() {
    const st = state.status;
    if (st) {
      const line = $('#status-line');
      line.replaceChildren(
        h('span', { text: 'v' + st.version }),
        h('span', { class: 'mono', text: st.config_path || 'built-in defaults' }),
        h('span', { class: st.last_reload.ok ? 'ok' : 'bad', text: st.last_reload.ok ? 'config loaded' : 'last reload failed' }),
        h('span', { text: 'store: ' + (st.store.path || 'none') }));
      const banner = $('#reload-banner');
      banner.hidden = st.last_reload.ok;
      banner.textContent = st.last_reload.ok ? '' : 'The last reload failed; the gateway keeps the previous config.\n' + (st.last_reload.error || '');
    }
    renderVirtualModels();
    renderModels();
    const list = $('#model-options') || document.body.appendChild(h('datalist', { id: 'model-options' }));
    list.replaceChildren(...state.models.map((m) => h('option', { value: m.id })));
  }

  function renderVirtualModels() {
    const filter = $('#vm-filter').value.trim().toLowerCase();
    const body = $('#vm-table tbody');
    const rows = state.entries
      .filter((e) => !filter || JSON.stringify(e).toLowerCase().includes(filter))
      .sort((a, b) => a.source.localeCompare(b.source) || (a.overridden ? 1 : -1));
    body.replaceChildren(...rows.map((e) => {
      const actions = e.overridden
        ? h('div', { class: 'actions' },
            h('button', { class: 'btn small', type: 'button', dataset: { action: 'delete' }, onclick: () => openDelete(e), text: 'Delete' }))
        : !e.managed
        ? h('div', { class: 'actions' },
            tryButton(e),
            h('button', { class: 'btn small', type: 'button', dataset: { action: 'edit' }, onclick: () => openEditor(e), text: 'Edit' }),
            h('button', { class: 'btn small', type: 'button', dataset: { action: 'rename' }, onclick: () => openRename(e), text: 'Rename' }),
            h('button', { class: 'btn small', type: 'button', dataset: { action: 'delete' }, onclick: () => openDelete(e), text: 'Delete' }))
        : h('div', { class: 'actions' }, tryButton(e), h('div', { class: 'readonly', title: 'Edit it in ' + e.location },
            h('span', { text: 'Read-only' }), h('span', { class: 'where mono', text: shortLocation(e.location) })));
      return h('tr', { class: e.overridden ? 'hidden-row' : '', dataset: { source: e.source, origin: e.origin } },
        h('td', {},
          h('div', { class: 'source mono', text: e.source }),
          e.description ? h('div', { class: 'sub', text: e.description }) : null,
          e.slug ? h('div', { class: 'sub', text: 'also: ' + e.slug }) : null),
        h('td', {}, targetsCell(e)),
        h('td', { text: strategyName(e) }),
        h('td', { class: 'middleware' }, middlewareCell(e)),
        h('td', {}, stateBadge(accessState(e), e.user_paths)),
        h('td', {}, originBadges(e)),
        h('td', { class: 'right' }, actions));
    }));
    $('#vm-empty').hidden = rows.length > 0;
  }

  // Opens the playground with this virtual model chosen.
  function tryButton(entry) {
    return h('button', { class: 'btn small', type: 'button', dataset: { try: entry.source },
      onclick: () => { location.hash = 'playground?model=' + enc(entry.source); }, text: 'Try' });
  }

  // ---- middleware pipelines ----

  const PHASES = [
    ['request_middleware', 'Request'],
    ['response_middleware', 'Response'],
    ['post_response_middleware', 'Post-response'],
  ];

  function middlewareCount(entry) {
    return PHASES.reduce((n, [key]) => n + (Array.isArray(entry[key]) ? entry[key].length : 0), 0);
  }

  function middlewareCell(entry) {
    const n = middlewareCount(entry);
    if (!n) return h('span', { class: 'muted', text: '\u2014' });
    return h('button', { class: 'btn small', type: 'button', dataset: { pipelines: entry.source },
      onclick: () => openPipelines(entry), text: n + (n === 1 ? ' step' : ' steps') });
  }

  function openPipelines(entry) {
    $('#mw-title').textContent = 'Middleware of ' + entry.source;
    $('#mw-body').replaceChildren(...PHASES.map(([key, label]) => {
      const calls = Array.isArray(entry[key]) ? entry[key] : [];
      return h('section', { class: 'pipeline', dataset: { phase: key } },
        h('h3', { text: label }),
        calls.length
          ? h('ol', {}, ...calls.map((c) => h('li', {},
              h('span', { class: 'mono', text: c.name }),
              c.config_type ? h('span', { class: 'muted', text: ' (' + c.config_type + ')' }) : null,
              c.config_id
                ? h('div', { class: 'sub', text: 'config_id: ' + c.config_id })
                : h('pre', { class: 'mono sub', text: JSON.stringify(c.config, null, 2) }))))
          : h('p', { class: 'muted', text: 'none' }));
    }));
    $('#mw-dialog').showModal();
  }

  function renderModels() {
    const filter = $('#model-filter').value.trim().toLowerCase();
    const body = $('#model-table tbody');
    const rows = state.models.filter((m) => !filter || m.id.toLowerCase().includes(filter));
    const out = [];
    let provider = null;
    for (const m of rows) {
      if (m.provider !== provider) {
        provider = m.provider;
        out.push(h('tr', { class: 'group' }, h('td', { colspan: 5, text: m.provider + ' · ' + m.provider_type })));
      }
      const policy = state.entries.find((e) => e.source === m.id && !e.overridden);
      out.push(h('tr', { dataset: { model: m.id } },
        h('td', { class: 'mono', text: m.id }),
        h('td', { text: m.provider }),
        h('td', {}, h('span', { class: 'badge ' + (m.available ? 'state-enabled' : 'state-disabled'), text: m.available ? 'Available' : 'Unavailable' })),
        h('td', {}, stateBadge(m.access), m.policy && m.policy !== m.id ? h('div', { class: 'sub', text: 'by ' + m.policy }) : null),
        h('td', { class: 'right' }, policy && policy.managed
          ? h('span', { class: 'readonly', text: 'Read-only' })
          : h('button', { class: 'btn small', type: 'button', onclick: () => (policy ? openEditor(policy) : openEditor(null, m.id)), text: policy ? 'Edit access' : 'Set access' }))));
    }
    body.replaceChildren(...out);
    $('#model-empty').hidden = rows.length > 0;
  }

  $('#vm-filter').addEventListener('input', renderVirtualModels);
  $('#model-filter').addEventListener('input', renderModels);

  // ---- editor ----

  function targetRow(t) {
    const row = h('div', { class: 'target-row' },
      h('input', { name: 'model', type: 'text', list: 'model-options', placeholder: 'provider/model', value: t ? t.model || '' : '', 'aria-label': 'Target model' }),
      h('input', { name: 'weight', type: 'number', min: '0', step: 'any', value: t && t.weight !== undefined ? t.weight : 1, 'aria-label': 'Weight', title: 'Weight (0 = fallback only)' }),
      h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Remove target', onclick: () => { row.remove(); syncForm(); }, text: '×' }));
    row._original = t || null;
    return row;
  }

  function syncForm() {
    const form = $('#vm-form');
    const n = $$('.target-row', form).length;
    $('#strategy-field').hidden = n < 2;
    const access = form.elements.access.value;
    $('#paths-field').hidden = access === 'enabled';
  }

  $('#add-target').addEventListener('click', () => {
    $('#targets').append(targetRow(null));
    syncForm();
  });
  $$('input[name=access]').forEach((r) => r.addEventListener('change', syncForm));

  function openEditor(entry, presetSource) {
    state.editing = entry;
    const form = $('#vm-form');
    form.reset();
    clearFormError();
    $('#vm-dialog-title').textContent = entry ? 'Edit ' + entry.source : 'New virtual model';
    form.elements.source.value = entry ? entry.source : (presetSource || '');
    form.elements.source.disabled = !!entry;
    form.elements.description.value = entry && entry.description ? entry.description : '';
    const targets = entry ? entryTargets(entry) : (presetSource ? [] : [null]);
    $('#targets').replaceChildren(...targets.map(targetRow));
    const strategy = entry && (entry.strategy || (entry.routing_config && entry.routing_config.type));
    form.elements.strategy.value = normalizeStrategy(strategy);
    const access = entry ? accessState(entry) : (presetSource ? 'restricted' : 'enabled');
    form.elements.access.value = access;
    form.elements.user_paths.value = entry && Array.isArray(entry.user_paths) ? entry.user_paths.join('\n') : '';
    syncForm();
    $('#vm-dialog').showModal();
    (entry ? form.elements.description : form.elements.source).focus();
  }

  function normalizeStrategy(s) {
    const v = String(s || '').toLowerCase();
    if (v.startsWith('cost')) return 'cost';
    if (v.startsWith('latency') || v === 'lowest_latency') return 'latency';
    if (v.startsWith('priority') || v === 'fallback' || v === 'failover') return 'priority';
    return 'round_robin';
  }

  function clearFormError() {
    const err = $('#vm-form-error');
    err.hidden = true;
    err.textContent = '';
    $$('.invalid', $('#vm-form')).forEach((el) => el.classList.remove('invalid'));
  }

  function showFormError(message, param) {
    const err = $('#vm-form-error');
    err.textContent = message;
    err.hidden = false;
    const form = $('#vm-form');
    if (!param) return;
    const m = /^targets?(?:\[(\d+)\])?/.exec(param);
    let el = null;
    if (m) {
      const rows = $$('.target-row', form);
      const row = rows[Number(m[1] || 0)];
      if (row) el = param.endsWith('.weight') ? row.querySelector('[name=weight]') : row.querySelector('[name=model]');
    } else {
      const name = param.split(/[.[]/)[0];
      el = form.elements[name] && form.elements[name].nodeType ? form.elements[name] : null;
    }
    if (el) el.classList.add('invalid');
  }

  // The entry fields the form owns; a PATCH sends exactly these (null clears), so fields it
  // does not show (slug, model_types, per-target retry ...) are kept.
  function formFields() {
    const form = $('#vm-form');
    const targets = $$('.target-row', form)
      .map((row) => {
        const model = row.querySelector('[name=model]').value.trim();
        if (!model) return null;
        const w = row.querySelector('[name=weight]').value.trim();
        const t = Object.assign({}, row._original || {});
        t.model = model;
        delete t.provider;
        const weight = w === '' ? 1 : Number(w);
        if (weight === 1) delete t.weight; else t.weight = weight;
        return t;
      })
      .filter(Boolean);
    const access = form.elements.access.value;
    const paths = form.elements.user_paths.value.split(/[\n,]/).map((p) => p.trim()).filter(Boolean);
    if (access === 'restricted' && paths.length === 0) {
      return { error: 'Add at least one user path to restrict access.', param: 'user_paths' };
    }
    const strategy = form.elements.strategy.value;
    return {
      fields: {
        description: form.elements.description.value.trim() || null,
        target: null,
        targets: targets.length ? targets : null,
        routing_config: null,
        // Kept with one target too (hidden then): a priority entry stays one.
        strategy: strategy !== 'round_robin' ? strategy : null,
        user_paths: access === 'enabled' ? null : (paths.length ? paths : null),
        enabled: access === 'disabled' ? false : null,
      },
    };
  }

  $('#vm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearFormError();
    const form = $('#vm-form');
    const built = formFields();
    if (built.error) return showFormError(built.error, built.param);
    const save = $('#save-vm');
    save.disabled = true;
    try {
      const entry = state.editing;
      if (entry) {
        await api('PATCH', API + '/virtual-models/' + enc(entry.source), built.fields, { 'If-Match': '"' + entry.etag + '"' });
        toast('Saved ' + entry.source);
      } else {
        const source = form.elements.source.value.trim();
        if (!source) return showFormError('Source is required.', 'source');
        const body = { source };
        for (const [k, v] of Object.entries(built.fields)) if (v !== null) body[k] = v;
        await api('POST', API + '/virtual-models', body);
        toast('Created ' + source);
      }
      $('#vm-dialog').close();
      await refresh();
    } catch (e) {
      if (e.status === 401) { $('#vm-dialog').close(); return; }
      const hint = e.code === 'etag_mismatch' ? '\nReload the page to see the latest version.' : '';
      showFormError(e.message + hint, e.param);
    } finally {
      save.disabled = false;
    }
  });

  // ---- rename ----

  function openRename(entry) {
    state.renaming = entry;
    const form = $('#rename-form');
    form.reset();
    $('#rename-old').textContent = entry.source;
    form.elements.new_source.value = entry.source;
    form.elements.new_source.classList.remove('invalid');
    $('#rename-error').hidden = true;
    $('#rename-dialog').showModal();
    form.elements.new_source.select();
  }

  $('#rename-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const entry = state.renaming;
    const input = $('#rename-form').elements.new_source;
    const next = input.value.trim();
    const err = $('#rename-error');
    try {
      await api('PATCH', API + '/virtual-models/' + enc(entry.source), { source: next }, { 'If-Match': '"' + entry.etag + '"' });
      $('#rename-dialog').close();
      toast('Renamed ' + entry.source + ' to ' + next);
      await refresh();
    } catch (e) {
      if (e.status === 401) { $('#rename-dialog').close(); return; }
      err.textContent = e.message;
      err.hidden = false;
      input.classList.add('invalid');
    }
  });

  // ---- delete ----

  function openDelete(entry) {
    state.confirming = entry;
    $('#confirm-title').textContent = 'Delete ' + entry.source + '?';
    $('#confirm-text').textContent = entry.overridden
      ? 'This store row is hidden by ' + entry.overridden_by + '. Deleting it keeps it from coming back when that declaration goes.'
      : 'Requests for ' + entry.source + ' stop using it at once.';
    $('#confirm-error').hidden = true;
    $('#confirm-dialog').showModal();
  }

  $('#confirm-ok').addEventListener('click', async () => {
    const entry = state.confirming;
    try {
      await api('DELETE', API + '/virtual-models/' + enc(entry.source), undefined, { 'If-Match': '"' + entry.etag + '"' });
      $('#confirm-dialog').close();
      toast('Deleted ' + entry.source);
      await refresh();
    } catch (e) {
      if (e.status === 401) { $('#confirm-dialog').close(); return; }
      const err = $('#confirm-error');
      err.textContent = e.message;
      err.hidden = false;
    }
  });

  // A field the user touches is no longer the one the error was about.
  $('#vm-form').addEventListener('input', (ev) => ev.target.classList && ev.target.classList.remove('invalid'));

  $('#new-vm').addEventListener('click', () => openEditor(null));
  $$('[data-close]').forEach((b) => b.addEventListener('click', () => b.closest('dialog').close()));

  boot();
})();
