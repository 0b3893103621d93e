/* UniMed for Orthanc: extension of Orthanc Explorer (jQuery Mobile).
 * On a study's page: the findings table, a link to the SR and a
 * "Re-analyse" button. The plugin prepends `var UNIMED_ROOT = '/unimed/';`. */
(function () {
  'use strict';
  var ROOT = (typeof UNIMED_ROOT === 'string') ? UNIMED_ROOT : '/unimed/';
  var BASE = '..' + ROOT;  /* Orthanc Explorer lives in /app/ */
  var pollTimer = null;

  function esc(s) {
    return String(s === null || s === undefined ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  function currentStudy() {
    return ($.mobile.pageData && $.mobile.pageData.uuid) ? $.mobile.pageData.uuid : null;
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

  function findingsTable(scores) {
    var rows = scores.slice().sort(function (a, b) { return b.probability - a.probability; });
    var html = '<table id="unimed-findings" style="width:100%;border-collapse:collapse">' +
      '<thead><tr style="text-align:left;border-bottom:1px solid #999">' +
      '<th>Finding</th><th>Probability</th><th>Label set</th><th>Modality</th></tr></thead><tbody>';
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      html += '<tr class="unimed-finding"><td>' + esc(r.label) + '</td><td>' +
        (100 * r.probability).toFixed(1) + ' %</td><td>' + esc(r.label_set) + '</td><td>' +
        esc(r.modality) + '</td></tr>';
    }
    return html + '</tbody></table>';
  }

  function show(uuid, status, data) {
    if (currentStudy() !== uuid) {
      return;  /* the user moved on */
    }
    var html = '<h3>UniMed findings</h3>';
    var pending = false;
    if (status === 200 && data && data.state === 'done') {
      html += '<p class="unimed-state" data-state="done">Analysed ' + esc(data.analysed_at) +
        ' with model ' + esc(data.model) + '. AI output, research use only.</p>';
      if (data.sr) {
        html += '<p><a id="unimed-sr-link" href="#instance?uuid=' + esc(data.sr) +
          '">Open the structured report (DICOM SR)</a></p>';
      }
      html += findingsTable(data.scores || []);
    } else if (status === 202 && data) {
      pending = true;
      html += '<p class="unimed-state" data-state="' + esc(data.state) + '">Analysis ' +
        esc(data.state) + (data.detail ? ' (' + esc(data.detail) + ')' : '') + '&hellip;</p>';
    } else if (status === 200 && data && data.state === 'failed') {
      html += '<p class="unimed-state" data-state="failed">The analysis failed: ' + esc(data.error) + '</p>';
    } else if (status === 200 && data && data.state === 'skipped') {
      html += '<p class="unimed-state" data-state="skipped">Not analysed: ' + esc(data.error) + '</p>';
    } else if (status === 404) {
      html += '<p class="unimed-state" data-state="none">This study has not been analysed.</p>';
    } else {
      html += '<p class="unimed-state" data-state="error">UniMed is not available (HTTP ' + status + ')' +
        (data && data.error ? ': ' + esc(data.error) : '') + '</p>';
    }
    if (status !== 503) {
      html += '<a href="#" id="unimed-reanalyse" data-role="button" data-icon="refresh" ' +
        'data-inline="true" data-mini="true">Re-analyse</a>';
    }
    panel().html(html).trigger('create');
    stopPolling();
    if (pending) {
      pollTimer = setTimeout(function () { refresh(uuid); }, 2000);
    }
  }

  function refresh(uuid) {
    $.ajax({
      url: BASE + 'studies/' + uuid,
      dataType: 'json',
      cache: false,
      complete: function (xhr) {
        var data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch (e) {
          data = null;
        }
        show(uuid, xhr.status, data);
      }
    });
  }

  $('#study').live('pagebeforeshow', function () {
    var uuid = currentStudy();
    stopPolling();
    panel().html('<h3>UniMed findings</h3><p class="unimed-state" data-state="loading">Loading&hellip;</p>');
    if (uuid) {
      refresh(uuid);
    }
  });

  $('#study').live('pagebeforehide', stopPolling);

  $('#unimed-reanalyse').live('click', function (e) {
    e.preventDefault();
    var uuid = currentStudy();
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
