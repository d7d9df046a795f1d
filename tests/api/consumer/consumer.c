/* Consumer of the installed C API: every expert of the model, acquired under a budget of top_k slots, must equal
 * the bytes of its parts read from the file with fread. */
#include <moe_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                          \
    do {                                                                                     \
        moe_status s_ = (call);                                                              \
        if (s_ != MOE_OK) {                                                                  \
            fprintf(stderr, "%s: %s: %s\n", #call, moe_status_string(s_), moe_last_error()); \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    moe_model* m = NULL;
    CHECK(moe_model_open(argv[1], &m));
    moe_model_info info;
    info.struct_size = sizeof(info);
    CHECK(moe_model_get_info(m, &info));
    moe_options o;
    CHECK(moe_options_init(&o));
    o.expert_budget_bytes = (uint64_t)info.top_k * ((info.max_expert_bytes + 4095) / 4096 * 4096);
    moe_context* c = NULL;
    CHECK(moe_context_create(m, &o, &c));
    FILE* f = fopen(argv[1], "rb");
    unsigned char* want = malloc(info.max_expert_bytes);
    int n_ok = 0;
    for (int l = 0; l < info.n_layers; ++l)
        for (int e = 0; e < info.n_experts; ++e) {
            moe_expert_part parts[8];
            size_t n = 0;
            for (int i = 0; i < 8; ++i) parts[i].struct_size = sizeof(moe_expert_part);
            CHECK(moe_model_get_expert_parts(m, l, e, parts, 8, &n));
            for (size_t i = 0; i < n; ++i) {
                fseek(f, (long)parts[i].file_offset, SEEK_SET);
                if (fread(want + parts[i].slot_offset, 1, parts[i].bytes, f) != parts[i].bytes) return 1;
            }
            moe_handle* h = NULL;
            const void* p = NULL;
            uint64_t bytes = 0;
            CHECK(moe_acquire(c, l, e, &h));
            CHECK(moe_wait(h));
            CHECK(moe_handle_data(h, &p, &bytes));
            n_ok += memcmp(p, want, bytes) == 0;
            CHECK(moe_release(h));
        }
    printf("moe_runtime %s: all %d experts match the file: %s\n", moe_version_string(), n_ok,
           n_ok == info.n_layers * info.n_experts ? "yes" : "NO");
    fclose(f);
    free(want);
    moe_context_destroy(c);
    moe_model_close(m);
    return n_ok == info.n_layers * info.n_experts ? 0 : 1;
}
