# op: taskqueue.drop
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
    if (-not (Test-Path -LiteralPath $folder -PathType Container)) {
        throw "task queue folder not found: $folder"
    }
    $path = [IO.Path]::Combine($folder, $name)
    $created = $false
    $waiting = $false
    try {
        # CreateNew fails when the file exists: the previous task file has not been consumed yet.
        $stream = [IO.File]::Open($path, 'CreateNew')
        $stream.Dispose()
        $created = $true
    }
    catch {
        if (Test-Path -LiteralPath $path -PathType Leaf) {
            $waiting = $true
        }
        else {
            throw
        }
    }
    [ordered]@{
        ok              = $true
        path            = $path
        created         = $created
        already_waiting = $waiting
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
