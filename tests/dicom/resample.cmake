# Tests for dicom/resample.c (Pillow-exact bicubic resize, torchvision crop,
# normalisation) and dicom/series.c (slice ordering / selection / aggregation).
# Included from tests/dicom/CMakeLists.txt:
#     include(${CMAKE_CURRENT_SOURCE_DIR}/resample.cmake)
# Expects a library target (default: unimed_dicom) that compiles
# dicom/resample.c and dicom/series.c and exposes dicom/ as an include dir.
if(NOT DEFINED UNIMED_RESAMPLE_TARGET)
  set(UNIMED_RESAMPLE_TARGET unimed_dicom)
endif()
if(NOT TARGET ${UNIMED_RESAMPLE_TARGET})
  message(STATUS "resample.cmake: target ${UNIMED_RESAMPLE_TARGET} missing, tests skipped")
  return()
endif()
if(NOT DEFINED UNIMED_PYTHON)
  set(UNIMED_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with numpy/Pillow/pydicom for tests")
endif()

add_executable(test_resample ${CMAKE_CURRENT_LIST_DIR}/test_resample.c)
target_link_libraries(test_resample PRIVATE ${UNIMED_RESAMPLE_TARGET} m)
add_test(NAME dicom_resample_unit COMMAND test_resample unit)
add_test(NAME dicom_resample_pillow
  COMMAND ${UNIMED_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/pillow_parity.py
          --bin $<TARGET_FILE:test_resample>)
set_tests_properties(dicom_resample_pillow PROPERTIES TIMEOUT 300)

add_executable(test_series ${CMAKE_CURRENT_LIST_DIR}/test_series.c)
target_link_libraries(test_series PRIVATE ${UNIMED_RESAMPLE_TARGET} m)
add_test(NAME dicom_series COMMAND test_series)
