# expert_cache_stress_tsan: the expert-cache stress test built again with ThreadSanitizer, so every normal test
# run checks the cache's locking (label `tsan`). Included from tests/cache/tests.cmake. moe_common and
# moe_cache are plain static libraries without TSan, so this target compiles their sources again, instrumented
# (moe_cache_tsan, from the same glob as moe_cache). Skipped when a global sanitizer is already on
# (MOE_SANITIZE: TSan does not combine with ASan, and MOE_SANITIZE=thread instruments everything anyway).
if(NOT MOE_SANITIZE AND NOT TARGET expert_cache_stress_tsan)
    include(CheckCXXSourceCompiles)
    set(_moe_saved_flags "${CMAKE_REQUIRED_FLAGS}")
    set(_moe_saved_link "${CMAKE_REQUIRED_LINK_OPTIONS}")
    set(CMAKE_REQUIRED_FLAGS "-fsanitize=thread")
    set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=thread")
    check_cxx_source_compiles("#include <thread>\nint main() { std::thread t([] {}); t.join(); return 0; }"
                              MOE_COMPILER_HAS_TSAN)
    set(CMAKE_REQUIRED_FLAGS "${_moe_saved_flags}")
    set(CMAKE_REQUIRED_LINK_OPTIONS "${_moe_saved_link}")

    if(MOE_COMPILER_HAS_TSAN)
        file(GLOB _moe_cache_tsan_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cache/*.cpp)
        file(GLOB _moe_common_tsan_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/common/*.cpp)
        add_library(moe_cache_tsan STATIC ${_moe_cache_tsan_sources} ${_moe_common_tsan_sources})
        target_include_directories(moe_cache_tsan PUBLIC ${PROJECT_SOURCE_DIR})
        target_compile_features(moe_cache_tsan PUBLIC cxx_std_20)
        # -O1 keeps TSan runs quick while leaving races visible; frame pointers give readable stacks.
        target_compile_options(moe_cache_tsan PUBLIC -fsanitize=thread -g -O1 -fno-omit-frame-pointer)
        target_link_options(moe_cache_tsan PUBLIC -fsanitize=thread)
        # Whatever moe_cache links besides moe_common (other helpers' cache sources may need more), plus what
        # moe_common links.
        get_target_property(_moe_cache_libs moe_cache LINK_LIBRARIES)
        if(_moe_cache_libs)
            list(REMOVE_ITEM _moe_cache_libs moe_common)
        else()
            set(_moe_cache_libs)
        endif()
        target_link_libraries(moe_cache_tsan PUBLIC ${_moe_cache_libs} fmt::fmt Threads::Threads)
        if(MOE_HAVE_CUDA)
            target_compile_definitions(moe_cache_tsan PUBLIC MOE_HAVE_CUDA=1)
            target_link_libraries(moe_cache_tsan PUBLIC CUDA::cudart_static)
        endif()
        moe_set_warnings(moe_cache_tsan)

        add_executable(expert_cache_stress_tsan ${CMAKE_CURRENT_LIST_DIR}/expert_cache_stress_test.cpp)
        target_link_libraries(expert_cache_stress_tsan PRIVATE moe_cache_tsan moe_test_support)
        moe_set_warnings(expert_cache_stress_tsan)

        # Kernels with high mmap randomisation (vm.mmap_rnd_bits > 28) break TSan's fixed shadow layout
        # ("unexpected memory mapping"); running with ASLR off through setarch -R sidesteps it.
        find_program(MOE_SETARCH setarch)
        if(MOE_SETARCH)
            set(_moe_tsan_cmd ${MOE_SETARCH} ${CMAKE_HOST_SYSTEM_PROCESSOR} -R $<TARGET_FILE:expert_cache_stress_tsan>)
        else()
            set(_moe_tsan_cmd $<TARGET_FILE:expert_cache_stress_tsan>)
        endif()
        add_test(NAME expert_cache_stress_tsan COMMAND ${_moe_tsan_cmd} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
        set_tests_properties(expert_cache_stress_tsan PROPERTIES
                             LABELS "cache;tsan"
                             ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1"
                             TIMEOUT 300)
    else()
        message(STATUS "ThreadSanitizer not supported by ${CMAKE_CXX_COMPILER}: expert_cache_stress_tsan not built")
    endif()
endif()
