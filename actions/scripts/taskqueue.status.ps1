# op: taskqueue.status
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $folder = [string]$Data.folder
    $name = [string]$Data.name
    if (-not [IO.Path]::IsPathRooted($folder)) {
        throw "not an absolute path: '$folder'"
    }
    if ($name -eq '' -or $name.IndexOfAny([IO.Path]::GetInvalidFileNameChars()) -ge 0) {
        throw "invalid task file name '$name'"
    }
    $folderExists = [bool](Test-Path -LiteralPath $folder -PathType Container)
    $waiting = $false
    if ($folderExists) {
        $waiting = [bool](Test-Path -LiteralPath ([IO.Path]::Combine($folder, $name)) -PathType Leaf)
    }
    [ordered]@{
        ok            = $true
        folder_exists = $folderExists
        waiting       = $waiting
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
