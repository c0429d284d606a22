/* placeholder so the module builds before its first source lands; delete when adding real files */
typedef int kiln_placeholder_cuda;
