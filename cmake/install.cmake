# `cmake --install`: libmoe_runtime.so (installed by runtime/CMakeLists.txt), its headers, a CMake package
# (find_package(moe_runtime) -> moe_runtime::moe_runtime) and moe_runtime.pc for pkg-config.
include(CMakePackageConfigHelpers)
set(MOE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/moe_runtime)
install(EXPORT moe_runtime_targets NAMESPACE moe_runtime:: FILE moe_runtimeTargets.cmake
        DESTINATION ${MOE_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/moe_runtimeConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/moe_runtimeConfig.cmake INSTALL_DESTINATION ${MOE_INSTALL_CMAKEDIR})
# 0.x: a minor release may break the ABI (the soname carries major.minor), so only the same minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/moe_runtimeConfigVersion.cmake VERSION ${PROJECT_VERSION}
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/moe_runtimeConfig.cmake ${PROJECT_BINARY_DIR}/moe_runtimeConfigVersion.cmake
        DESTINATION ${MOE_INSTALL_CMAKEDIR})
# The .pc file is relocatable (prefix from ${pcfiledir}) so `cmake --install --prefix DIR` works anywhere.
file(RELATIVE_PATH MOE_PC_PREFIX_REL /moe_root/${CMAKE_INSTALL_LIBDIR}/pkgconfig /moe_root)
configure_file(${PROJECT_SOURCE_DIR}/moe_runtime.pc.in ${PROJECT_BINARY_DIR}/moe_runtime.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/moe_runtime.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
