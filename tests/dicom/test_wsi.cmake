# Whole-slide tests (dicom/wsi.cpp); included from tests/dicom/CMakeLists.txt.
add_executable(test_wsi ${CMAKE_CURRENT_LIST_DIR}/test_wsi.c)
target_link_libraries(test_wsi PRIVATE unimed_dicom)

add_test(NAME dicom_wsi
  COMMAND ${UNIMED_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/wsi_test.py $<TARGET_FILE:test_wsi>
          ${UDCM_SHARED_FILES})
set_tests_properties(dicom_wsi PROPERTIES TIMEOUT 600)
