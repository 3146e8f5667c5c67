include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(PERSONA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/persona)
install(TARGETS persona EXPORT personaTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/persona ${PROJECT_BINARY_DIR}/include/persona
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT personaTargets NAMESPACE persona:: DESTINATION ${PERSONA_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/personaConfig.cmake.in
  ${PROJECT_BINARY_DIR}/personaConfig.cmake INSTALL_DESTINATION ${PERSONA_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/personaConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/personaConfig.cmake ${PROJECT_BINARY_DIR}/personaConfigVersion.cmake
  DESTINATION ${PERSONA_CMAKE_DIR})
