// UniMed for Orthanc — SR writer: XML Schema validation (libxml2) of the
// report's XML form against DCMTK's dsr2xml.xsd (docs/REPORTS.md, "XML").

#include "sr_internal.h"

#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include <cstdarg>
#include <cstdio>
#include <string>

using udcm_sr::empty;
using udcm_sr::set_err;

extern "C" {

// libxml2 error collector: keeps the first few messages.
static void xml_collect(void *ctx, const char *fmt, ...)
{
    std::string *s = static_cast<std::string *>(ctx);
    if (s->size() > 2000) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    *s += buf;
}

int udcm_sr_validate_xml(const char *xml_path, const char *xsd_path, char *err, size_t errlen)
{
    if (empty(xml_path) || empty(xsd_path)) {
        set_err(err, errlen, "udcm_sr_validate_xml: missing %s path", empty(xml_path) ? "XML" : "XSD");
        return -1;
    }
    std::string msgs;
    int rc = -1;
    xmlSchemaParserCtxtPtr pctx = xmlSchemaNewParserCtxt(xsd_path);
    xmlSchemaPtr schema = nullptr;
    xmlSchemaValidCtxtPtr vctx = nullptr;
    xmlDocPtr doc = nullptr;
    if (pctx) {
        xmlSchemaSetParserErrors(pctx, xml_collect, xml_collect, &msgs);
        schema = xmlSchemaParse(pctx);
    }
    if (!schema) {
        set_err(err, errlen, "%s: cannot load XML Schema: %s", xsd_path, msgs.c_str());
        goto done;
    }
    doc = xmlReadFile(xml_path, nullptr, XML_PARSE_NONET);
    if (!doc) {
        set_err(err, errlen, "%s: not well-formed XML", xml_path);
        goto done;
    }
    vctx = xmlSchemaNewValidCtxt(schema);
    if (!vctx) {
        set_err(err, errlen, "%s: out of memory", xml_path);
        goto done;
    }
    xmlSchemaSetValidErrors(vctx, xml_collect, xml_collect, &msgs);
    if (xmlSchemaValidateDoc(vctx, doc) == 0) {
        rc = 0;
    } else {
        while (!msgs.empty() && msgs.back() == '\n') msgs.pop_back();
        for (char &c : msgs)
            if (c == '\n') c = ' ';
        set_err(err, errlen, "%s: not valid against %s: %s", xml_path, xsd_path, msgs.c_str());
    }
done:
    if (vctx) xmlSchemaFreeValidCtxt(vctx);
    if (doc) xmlFreeDoc(doc);
    if (schema) xmlSchemaFree(schema);
    if (pctx) xmlSchemaFreeParserCtxt(pctx);
    return rc;
}

}  // extern "C"
