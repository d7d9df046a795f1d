# End-to-end check of `moe gen`, run as `cmake -D... -P gen_check.cmake` by CTest (tests_gen.cmake): the small
# shape is generated, inspected and run from token ids (the file has no tokenizer), then generated again over the
# existing file, which is refused without --force and replaced with it.
#   MOE  the moe binary    DIR  a scratch folder (emptied first)
cmake_minimum_required(VERSION 3.24)

file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
set(model ${DIR}/small.gguf)

# moe_gen_step(<rc> <regex> <args>...): run moe with args, expect the status and output matching the regex.
function(moe_gen_step want regex)
    execute_process(COMMAND ${MOE} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    string(REPLACE ";" " " shown "${ARGN}")
    if(NOT rc STREQUAL want)
        message(FATAL_ERROR "moe ${shown}: exit status ${rc}, expected ${want}\nstdout:\n${out}\nstderr:\n${err}")
    endif()
    if(NOT "${out}${err}" MATCHES "${regex}")
        message(FATAL_ERROR "moe ${shown}: output does not match '${regex}'\nstdout:\n${out}\nstderr:\n${err}")
    endif()
endfunction()

moe_gen_step(0 "qwen3-moe-small \\(qwen3moe\\): 2 layers, 8 experts \\(top-2\\).*experts Q4_K/Q4_K/Q6_K.*wrote .*small\\.gguf: [0-9]+ bytes .* GB/s"
             gen --shape qwen3-moe-small -o ${model} --seed 5 --threads 2)
if(EXISTS ${model}.tmp)
    message(FATAL_ERROR "moe gen left ${model}.tmp behind")
endif()
moe_gen_step(0 "architecture qwen3moe \\(qwen3-moe-small \\(random weights\\)\\).*experts +8 routed per layer, top-2, width 256"
             inspect ${model})
moe_gen_step(0 "decode +4 tokens generated"
             run -m ${model} --prompt-ids 1,2,3 -n 4 --backend cpu --stats-json ${DIR}/stats.json)
file(READ ${DIR}/stats.json stats)
string(JSON n LENGTH "${stats}" tokens)
if(NOT n EQUAL 4)
    message(FATAL_ERROR "moe run on the generated model: ${n} tokens, expected 4\n${stats}")
endif()

file(SIZE ${model} size_before)
moe_gen_step(1 "^moe gen: error: .*small\\.gguf: already exists \\(pass --force to replace it\\)"
             gen --shape qwen3-moe-small -o ${model})
moe_gen_step(0 "wrote .*small\\.gguf" gen --shape qwen3-moe-small -o ${model} --layers 1 --experts-type q8_0 --force)
file(SIZE ${model} size_after)
if(size_after EQUAL size_before)
    message(FATAL_ERROR "moe gen --force --layers 1 did not replace ${model} (${size_after} bytes both times)")
endif()
