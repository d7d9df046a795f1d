# A CPU-only user pays nothing for CUDA (labels runtime, e2e): `moe --help`, `moe inspect` and a `moe run
# --backend cpu` must start and finish under a 600 MB address-space limit (ulimit -v), and must not load any CUDA
# library (lean_start_check.cmake). CUDA builds link the CUDA runtime statically, which opens the driver only on
# the first CUDA call, and open cuBLAS only when a CUDA backend is made. Sanitizer builds reserve terabytes of
# shadow address space by design, so the tests are not registered there.
if(NOT MOE_SANITIZE)
    set(_moe_lean_fx ${PROJECT_SOURCE_DIR}/tests/fixtures/mixtral-tiny-f32.gguf)
    foreach(cfg "help|--help" "inspect|inspect|${_moe_lean_fx}" "inspect_json|inspect|${_moe_lean_fx}|--json|--layout"
                "inspect_plan_cpu|inspect|${_moe_lean_fx}|--vram-budget|400K|--ctx|40|--backend|cpu"
                "run_cpu|run|-m|${_moe_lean_fx}|--prompt-ids|1,2,3|-n|2|--backend|cpu"
                "run_cpu_budget|run|-m|${_moe_lean_fx}|--prompt-ids|1,2,3|-n|2|--backend|cpu|--vram-budget|400K")
        string(REPLACE "|" ";" cfg "${cfg}")
        list(POP_FRONT cfg tag)
        string(JOIN "|" joined ${cfg})
        add_test(NAME lean_start.${tag}
                 COMMAND ${CMAKE_COMMAND} -DMOE=$<TARGET_FILE:moe> "-DARGS=${joined}" -DLIMIT_KB=600000 -DNO_CUDA=ON
                         -P ${CMAKE_CURRENT_LIST_DIR}/lean_start_check.cmake)
        set_tests_properties(lean_start.${tag} PROPERTIES WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                             LABELS "runtime;e2e" TIMEOUT 60)
    endforeach()
endif()
