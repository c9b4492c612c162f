/* rmtree.h — remove a test's temporary tree whatever an extraction left in
 * it (read-only directories included), following no symlink. For the unit
 * tests and fuzz targets only. */
#ifndef SA_RMTREE_H
#define SA_RMTREE_H

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* name under dfd and everything below it: 0, or -1 with errno of the last
 * removal (a missing name is 0). */
static int rm_rf_at(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return 0;
    if (S_ISDIR(st.st_mode)) {
        fchmodat(dfd, name, 0700, 0);
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            DIR *d = fdopendir(fd);
            struct dirent *de;
            while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                    rm_rf_at(dirfd(d), de->d_name);
            closedir(d);
        }
        return unlinkat(dfd, name, AT_REMOVEDIR);
    }
    return unlinkat(dfd, name, 0);
}

#endif
