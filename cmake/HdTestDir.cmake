# hd_add_test_dir(LIBS ...): one test executable per source file in the current directory.
# File prefix chooses the CTest label: test_*.c -> unit, golden_*.c -> golden,
# slow_*.c -> slow, multiproc_*.c -> multiproc.
function(hd_add_test_dir)
    cmake_parse_arguments(D "" "" "LIBS" ${ARGN})
    foreach(prefix test golden slow multiproc)
        file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${prefix}_*.c)
        set(label ${prefix})
        if(prefix STREQUAL "test")
            set(label unit)
        endif()
        foreach(src ${srcs})
            get_filename_component(name ${src} NAME_WE)
            hd_add_test(${name} SOURCES ${src} LABELS ${label} LIBS hd_test_main ${D_LIBS}
                        TIMEOUT 900)
        endforeach()
    endforeach()
endfunction()
