// What kind of file a stat() mode names, for messages that refuse anything but a regular file.
#pragma once

#include <sys/stat.h>

namespace moe {

// "a directory", "a FIFO", "a character device", ... ("a regular file" for one).
inline const char* describe_file_type(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "a special file";
}

}  // namespace moe
