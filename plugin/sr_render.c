/* GET studies/{id}/report.html: the study's current SR, readable — DCMTK's
 * HTML rendering (dsr2html's renderer), with a bar leading back to the
 * study in Orthanc Explorer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "rest.h"
#include "udcm_sr_html.h"

/* "../" up from Root + "studies/{id}/" to Orthanc's root. */
static void path_to_orthanc_root(char *out, size_t n) {
  const char *root = rest_root();
  int depth = 1; /* studies/{id}/ adds two folders; Root's own slashes add the rest */
  for (const char *p = root; *p; p++) depth += *p == '/';
  out[0] = 0;
  for (int i = 0; i < depth && strlen(out) + 3 < n; i++) strcat(out, "../");
}

OrthancPluginErrorCode rest_report_html(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) {
    OrthancPluginSendMethodNotAllowed(g.ctx, out, "GET");
    return 0;
  }
  static const char *const no_args[] = {NULL};
  if (rest_check_args(out, req, no_args)) return 0;
  const char *id = req->groups[0];
  if (!rest_valid_id(id)) {
    rest_answer_error(out, 400, "not an Orthanc study ID: %s", id);
    return 0;
  }
  int pending = 0;
  cJSON *j = index_study_json(id, &pending);
  const char *sr = cJSON_GetStringValue(
      cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "sr"), "instance_id"));
  if (!sr) {
    cJSON_Delete(j);
    rest_answer_error(out, 404, "study %s has no UniMed report", id);
    return 0;
  }
  char uri[160];
  snprintf(uri, sizeof uri, "/instances/%s/file", sr);
  cJSON_Delete(j);
  buf_t b;
  int st = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, &b, NULL);
  if (st != 200 || !b.data) {
    buf_free(&b);
    rest_answer_error(out, 404, "the report of study %s is no longer in Orthanc (HTTP %d)", id, st);
    return 0;
  }
  char *html = NULL, err[512] = "";
  size_t len = 0;
  int rc = udcm_sr_render_html(b.data, b.len, "the report", &html, &len, err, sizeof err);
  buf_free(&b);
  if (rc != 0) {
    rest_answer_error(out, 500, "%s", err);
    return 0;
  }
  /* The way back, first thing in the body. */
  char up[64], bar[1024];
  path_to_orthanc_root(up, sizeof up);
  snprintf(bar, sizeof bar,
           "<div id=\"unimed-back\" style=\"padding:8px;background:#eef;border-bottom:1px solid #99c;"
           "font-family:sans-serif\"><a id=\"unimed-back-link\" href=\"%sapp/explorer.html#study?uuid=%s\">"
           "&larr; Back to the study in Orthanc Explorer</a> &nbsp; UniMed AI findings &mdash; research "
           "use only</div>",
           up, id);
  char *body = strstr(html, "<body");
  char *at = body ? strchr(body, '>') : NULL;
  size_t cut = at ? (size_t)(at - html) + 1 : 0;
  size_t total = len + strlen(bar);
  char *page = malloc(total + 1);
  if (!page) {
    free(html);
    rest_answer_error(out, 500, "out of memory");
    return 0;
  }
  memcpy(page, html, cut);
  memcpy(page + cut, bar, strlen(bar));
  memcpy(page + cut + strlen(bar), html + cut, len - cut + 1);
  free(html);
  OrthancPluginAnswerBuffer(g.ctx, out, page, (uint32_t)total, "text/html; charset=utf-8");
  free(page);
  return 0;
}
