# Debian package unimed-orthanc (CPack DEB). scripts/package.sh configures a
# build in build-deb/ with
#   -DCMAKE_INSTALL_PREFIX=/usr -DUNIMED_LABELSET_DIR=/usr/share/unimed/labelsets -DUNIMED_PACKAGE=ON
# and runs cpack. The package holds
#   /usr/share/orthanc/plugins/libOrthancUniMed.so   (plugin/CMakeLists.txt)
#   /etc/orthanc/unimed.json                         conffile; with UNIMED_PACKAGE=ON the
#                                                    packaged variant written below
#   /usr/share/unimed/labelsets/*.json               (plugin/CMakeLists.txt)
#   /usr/share/unimed/demo-model/                    samples/demo-model, when it exists
#   /usr/bin/unimed, /usr/bin/unimed-train           (tools/, tools/train/)
# Depends: computed by dpkg-shlibdeps, plus orthanc.
include(GNUInstallDirs)

option(UNIMED_PACKAGE "Install the packaged unimed.json (demo model, installed label sets) and the demo model" OFF)

set(UNIMED_DEMO_MODEL_SRC ${PROJECT_SOURCE_DIR}/samples/demo-model)
set(_share ${CMAKE_INSTALL_FULL_DATADIR}/unimed)
set(_have_demo FALSE)
if(EXISTS ${UNIMED_DEMO_MODEL_SRC}/model.safetensors AND EXISTS ${UNIMED_DEMO_MODEL_SRC}/config.json)
  set(_have_demo TRUE)
endif()

if(UNIMED_PACKAGE AND TARGET OrthancUniMed)
  if(_have_demo)
    install(FILES ${UNIMED_DEMO_MODEL_SRC}/config.json ${UNIMED_DEMO_MODEL_SRC}/model.safetensors
                  ${UNIMED_DEMO_MODEL_SRC}/vocab.txt
            DESTINATION ${CMAKE_INSTALL_DATADIR}/unimed/demo-model)
    foreach(_f README.md metrics.json train-config.json model-card.json)
      if(EXISTS ${UNIMED_DEMO_MODEL_SRC}/${_f})
        install(FILES ${UNIMED_DEMO_MODEL_SRC}/${_f} DESTINATION ${CMAKE_INSTALL_DATADIR}/unimed/demo-model)
      endif()
    endforeach()
    install(DIRECTORY ${UNIMED_DEMO_MODEL_SRC}/labelsets/ DESTINATION ${CMAKE_INSTALL_DATADIR}/unimed/demo-model/labelsets
            FILES_MATCHING PATTERN "*.json")
  else()
    message(WARNING "Packaging: samples/demo-model is missing: the package ships no model; "
                    "its unimed.json points at ${_share}/demo-model, which an admin must fill (README.md)")
  endif()

  # The packaged configuration: plugin/unimed.json with ModelDirectory set to
  # the demo model, its label sets (plus the shipped modality check) and the
  # installed label-set folder. Every edit must apply, or the build stops.
  file(READ ${PROJECT_SOURCE_DIR}/plugin/unimed.json _cfg)
  set(_edits
    "\"ModelDirectory\" : \"/var/lib/orthanc/unimed-model\","
    "/* The package points at its demo model: 0.9 M parameters trained on 28-pixel
     * MedMNIST chest X-rays and breast ultrasound, NOT for clinical use
     * (${_share}/demo-model/README.md). For real findings convert the
     * UniMed-CLIP weights (README.md) and put their folder here. */
    \"ModelDirectory\" : \"${_share}/demo-model\","
    "// \"LabelSets\" : [ \"/usr/share/unimed/labelsets/chest-xray.json\" ],"
    "/* The demo model's two label sets and the shipped modality check. With the
     * real weights, delete this key to score every set of LabelSetDirectory. */
    \"LabelSets\" : [ \"${_share}/demo-model/labelsets/pneumonia.json\",
                    \"${_share}/demo-model/labelsets/breast.json\",
                    \"${_share}/labelsets/modality.json\" ],"
    "// \"LabelSetDirectory\" : \"/usr/share/unimed/labelsets\","
    "\"LabelSetDirectory\" : \"${_share}/labelsets\",")
  list(LENGTH _edits _n)
  math(EXPR _last "${_n} - 1")
  foreach(_i RANGE 0 ${_last} 2)
    math(EXPR _j "${_i} + 1")
    list(GET _edits ${_i} _from)
    list(GET _edits ${_j} _to)
    string(FIND "${_cfg}" "${_from}" _pos)
    if(_pos LESS 0)
      message(FATAL_ERROR "Packaging: plugin/unimed.json no longer contains '${_from}': update cmake/Packaging.cmake")
    endif()
    string(REPLACE "${_from}" "${_to}" _cfg "${_cfg}")
  endforeach()
  file(WRITE ${CMAKE_BINARY_DIR}/package/unimed.json "${_cfg}")
  # Installed after (and over) plugin/CMakeLists.txt's copy of plugin/unimed.json:
  # this file is included at the end of the top-level CMakeLists.txt (CMP0082).
  install(FILES ${CMAKE_BINARY_DIR}/package/unimed.json DESTINATION ${UNIMED_ORTHANC_CONFIG_DIR})

  # Maintainer scripts: the conffile, and a restart of a running Orthanc so
  # that it loads (or drops) the plugin.
  file(WRITE ${CMAKE_BINARY_DIR}/package/conffiles "${UNIMED_ORTHANC_CONFIG_DIR}/unimed.json\n")
  foreach(_script postinst postrm)
    file(WRITE ${CMAKE_BINARY_DIR}/package/${_script}
"#!/bin/sh
set -e
# Restart Orthanc if it runs under systemd, so that it loads the new plugin.
if [ -d /run/systemd/system ] && systemctl is-active --quiet orthanc.service 2>/dev/null; then
  systemctl try-restart orthanc.service || true
fi
exit 0
")
    file(CHMOD ${CMAKE_BINARY_DIR}/package/${_script}
         PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
endif()

# ---- CPack ----
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME unimed-orthanc)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "UniMed for Orthanc")
set(CPACK_PACKAGE_CONTACT "UniMed for Orthanc maintainers <unimed-orthanc@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "UniMed-CLIP findings for Orthanc (plugin, unimed command)")
set(CPACK_PACKAGE_DESCRIPTION
"The Orthanc plugin libOrthancUniMed.so runs the UniMed-CLIP vision-language
model on every study that arrives, on the CPU, scores it zero-shot against
clinical label sets, and stores the findings back as a DICOM Structured
Report (TID 1500). Also the unimed command (inspect, analyse, read SRs) and a
small demo model. Research output, not for clinical use.")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "orthanc (>= 1.10.1)")
set(CPACK_DEBIAN_PACKAGE_RELEASE "")
find_program(UNIMED_DPKG dpkg)
if(UNIMED_DPKG)
  execute_process(COMMAND ${UNIMED_DPKG} --print-architecture OUTPUT_VARIABLE _arch OUTPUT_STRIP_TRAILING_WHITESPACE)
else()
  set(_arch amd64)
endif()
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${_arch})
set(CPACK_DEBIAN_FILE_NAME "${CPACK_PACKAGE_NAME}_${PROJECT_VERSION}_${_arch}.deb")
if(UNIMED_PACKAGE AND TARGET OrthancUniMed)
  set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
      ${CMAKE_BINARY_DIR}/package/conffiles ${CMAKE_BINARY_DIR}/package/postinst ${CMAKE_BINARY_DIR}/package/postrm)
  set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
endif()
set(CPACK_STRIP_FILES ON)
set(CPACK_OUTPUT_FILE_PREFIX ${CMAKE_BINARY_DIR})
include(CPack)
