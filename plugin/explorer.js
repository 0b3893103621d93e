/* UniMed for Orthanc: extension of Orthanc Explorer (jQuery Mobile).
 * On a study's page: what the numbers are (model, label sets, what a
 * probability means), the findings, the modality check apart, failed series
 * marked, the report readable one click away, and a "Re-analyse" button.
 * The plugin prepends `var UNIMED_ROOT = '/unimed/';`.
 *
 * The panel always belongs to the study in the address: it is (re)drawn on
 * every way the study page can change (pagebeforeshow, hashchange, back and
 * forward), each answer is dropped unless it is for the study the address
 * names now, and a guard redraws it if the two ever disagree. */
(function () {
  'use strict';
  var ROOT = (typeof UNIMED_ROOT === 'string') ? UNIMED_ROOT : '/unimed/';
  var BASE = '..' + ROOT;  /* Orthanc Explorer lives in /app/ */
  var MODALITY_CHECK = 'modality';  /* the label set that checks the image type */
  var pollTimer = null;
  var shownFor = null;  /* the study the panel shows (or loads) */

  function esc(s) {
    return String(s === null || s === undefined ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  /* The study the address names (#study?uuid=...), else null. */
  function addressStudy() {
    var m = /^#study\?(?:.*&)?uuid=([0-9a-fA-F-]+)/.exec(window.location.hash || '');
    return m ? m[1] : null;
  }

  function panel() {
    var p = $('#unimed-panel');
    if (p.length === 0) {
      p = $('<div id="unimed-panel" style="padding:10px"></div>');
      $('#study .ui-block-b').append(p);
    }
    return p;
  }

  function stopPolling() {
    if (pollTimer) {
      clearTimeout(pollTimer);
      pollTimer = null;
    }
  }

  function pct(p) {
    return (100 * p).toFixed(1) + ' %';
  }

  function scoresTable(id, rows, withSet) {
    rows = rows.slice().sort(function (a, b) { return b.probability - a.probability; });
    var html = '<table id="' + id + '" style="width:100%;border-collapse:collapse">' +
      '<thead><tr style="text-align:left;border-bottom:1px solid #999">' +
      '<th>' + (withSet ? 'Finding' : 'Looks like') + '</th><th>Probability</th>' +
      (withSet ? '<th>Label set</th>' : '') + '<th>Modality</th></tr></thead><tbody>';
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      html += '<tr class="unimed-finding"><td>' + esc(r.label) + '</td><td>' + pct(r.probability) +
        '</td>' + (withSet ? '<td>' + esc(r.label_set) + '</td>' : '') + '<td>' +
        esc(r.modality) + '</td></tr>';
    }
    return html + '</tbody></table>';
  }

  /* Model, label sets with versions, what a probability means. */
  function about(data) {
    var m = data.model || {};
    var html = '<p class="unimed-model">Model <b>' + esc(m.name) + '</b> version ' + esc(m.version) +
      ' <span style="color:#777">(' + esc(String(m.hash || '').slice(0, 12)) + ')</span>';
    if (data.analysed_at) {
      html += ', analysed ' + esc(data.analysed_at);
    }
    html += '. AI output, research use only.</p>';
    var used = {};
    (data.scores || []).forEach(function (s) { used[s.label_set] = true; });
    var sets = (data.label_sets || []).filter(function (ls) { return used[ls.name]; });
    if (sets.length) {
      html += '<ul class="unimed-label-sets" style="margin:4px 0 8px 0">';
      sets.forEach(function (ls) {
        html += '<li data-label-set="' + esc(ls.name) + '"><b>' + esc(ls.name) + '</b> ' + esc(ls.version) +
          ' (' + esc(ls.scoring) + '): probability = ' + esc(ls.probability_meaning) + '</li>';
      });
      html += '</ul>';
    }
    return html;
  }

  /* Label sets the model card does not list (docs/MODEL.md): their answers
   * come with the card's warning. */
  function cardWarnings(list) {
    if (!list || !list.length) {
      return '';
    }
    var html = '<div id="unimed-card-warnings" style="border-left:4px solid #d90;padding:4px 8px;margin:6px 0">' +
      '<b>Not validated for this model:</b><ul style="margin:2px 0">';
    list.forEach(function (w) {
      html += '<li class="unimed-label-set-warning" data-label-set="' + esc(w.label_set) + '">' + esc(w.warning) + '</li>';
    });
    return html + '</ul></div>';
  }

  function failedSeries(list) {
    if (!list || !list.length) {
      return '';
    }
    var html = '<div id="unimed-failed" style="border-left:4px solid #c33;padding:4px 8px;margin:6px 0">' +
      '<b>Not analysed:</b><ul style="margin:2px 0">';
    list.forEach(function (f) {
      html += '<li class="unimed-failed-series">' +
        (f.series_instance_uid ? 'series ' + esc(f.series_instance_uid) + (f.modality ? ' (' + esc(f.modality) + ')' : '') + ': '
                               : '') + esc(f.error) + '</li>';
    });
    return html + '</ul></div>';
  }

  function show(uuid, status, data) {
    if (addressStudy() !== uuid || shownFor !== uuid) {
      return;  /* the user moved on: this answer is for another study */
    }
    var html = '<h3>UniMed findings</h3>';
    var pending = false;
    var enabled = !(status === 503 || (data && data.enabled === false));
    if (status === 200 && data && data.state === 'done') {
      html += '<p class="unimed-state" data-state="done">' +
        (data.complete ? 'Analysed.' : 'Analysed in part: some series could not be read.') + '</p>';
      html += about(data);
      html += cardWarnings(data.label_set_warnings);
      html += failedSeries(data.failed_series);
      if (data.sr) {
        html += '<p><a id="unimed-report-link" data-ajax="false" href="' + esc(BASE + 'studies/' + uuid + '/report.html') +
          '">Read the report</a> &middot; <a id="unimed-sr-link" href="#instance?uuid=' + esc(data.sr.instance_id) +
          '">DICOM SR instance</a></p>';
      }
      var scores = data.scores || [];
      var findings = scores.filter(function (s) { return s.label_set !== MODALITY_CHECK; });
      var check = scores.filter(function (s) { return s.label_set === MODALITY_CHECK; });
      html += scoresTable('unimed-findings', findings, true);
      if (check.length) {
        html += '<h4 style="margin-bottom:2px">Modality check</h4><p style="margin:0 0 4px 0;color:#555">' +
          'Which kind of image the model thinks this is; a disagreement with the DICOM Modality means ' +
          'the findings above should not be trusted. Not a finding.</p>' +
          scoresTable('unimed-modality-check', check, false);
      }
    } else if (status === 202 && data) {
      pending = true;
      html += '<p class="unimed-state" data-state="' + esc(data.state) + '">Analysis ' +
        esc(data.state) + (data.detail ? ' (' + esc(data.detail) + ')' : '') + '&hellip;</p>';
    } else if (status === 200 && data && data.state === 'failed') {
      html += '<p class="unimed-state" data-state="failed">The analysis failed: ' + esc(data.error) + '</p>' +
        failedSeries(data.failed_series);
    } else if (status === 200 && data && data.state === 'skipped') {
      html += '<p class="unimed-state" data-state="skipped">Not analysed: ' + esc(data.error) + '</p>';
    } else if (status === 404) {
      html += '<p class="unimed-state" data-state="none">This study has not been analysed.</p>';
    } else if (!enabled) {
      html += '<p class="unimed-state" data-state="disabled">The UniMed plugin is disabled: ' +
        esc(data && (data.reason || data.error)) + '</p>';
    } else {
      html += '<p class="unimed-state" data-state="error">UniMed is not available (HTTP ' + status + ')' +
        (data && data.error ? ': ' + esc(data.error) : '') + '</p>';
    }
    if (enabled) {
      html += '<a href="#" id="unimed-reanalyse" data-role="button" data-icon="refresh" ' +
        'data-inline="true" data-mini="true">Re-analyse</a>';
    }
    panel().attr('data-study', uuid).html(html).trigger('create');
    stopPolling();
    if (pending) {
      pollTimer = setTimeout(function () { refresh(uuid); }, 2000);
    }
  }

  function getJson(url, done) {
    $.ajax({
      url: url,
      dataType: 'json',
      cache: false,
      complete: function (xhr) {
        var data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch (e) {
          data = null;
        }
        done(xhr.status, data);
      }
    });
  }

  function refresh(uuid) {
    getJson(BASE + 'studies/' + uuid, function (status, data) {
      if (status === 503) {
        /* Disabled: status says why. */
        getJson(BASE + 'status', function (s2, st) { show(uuid, 503, st || data); });
      } else {
        show(uuid, status, data);
      }
    });
  }

  /* Draws the panel for the study in the address, unless it already does. */
  function follow(force) {
    var uuid = addressStudy();
    if (!uuid || $('#study').length === 0) {
      return;
    }
    if (!force && shownFor === uuid && panel().attr('data-study') === uuid) {
      return;
    }
    stopPolling();
    shownFor = uuid;
    panel().attr('data-study', '').html('<h3>UniMed findings</h3>' +
      '<p class="unimed-state" data-state="loading">Loading&hellip;</p>');
    refresh(uuid);
  }

  $('#study').live('pagebeforeshow', function () { follow(true); });
  $('#study').live('pagebeforehide', stopPolling);
  $(window).bind('hashchange', function () { follow(false); });
  /* The guard: whatever navigation happened, the panel never shows
   * another study than the address for long. */
  setInterval(function () {
    if (addressStudy() && shownFor !== addressStudy()) {
      follow(false);
    }
  }, 500);

  $('#unimed-reanalyse').live('click', function (e) {
    e.preventDefault();
    var uuid = addressStudy();
    if (!uuid) {
      return;
    }
    $.ajax({
      url: BASE + 'studies/' + uuid + '/analyze',
      type: 'POST',
      dataType: 'json',
      complete: function () { refresh(uuid); }
    });
  });
}());
